"""Checkout: a double-submitted order is charged once.

The checkout form posts to the queue's HTTP endpoint with the order id as both group and dedupe
id: ``POST /queues/charge.fifo/<order id>/<order id>``. A second submit within the dedupe window
gets the first job's id back and queues nothing.

    queuerun dev examples.checkout.app:app
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from queuerun import App, JobMetadata

app = App("checkout", http_max_body=64 * 1024)


@dataclass
class PaymentGateway:
    charges: list[tuple[str, int]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def charge(self, order_id: str, cents: int) -> None:
        with self._lock:
            self.charges.append((order_id, cents))


gateway = PaymentGateway()


@dataclass
class Order:
    order_id: str
    cents: int
    email: str


# public=True: the customer's browser posts the checkout form without signing in to this service. A queue
# not declared public refuses anonymous requests (401), whatever the service's access setting.
@app.queue("charge.fifo", timeout=30, dedupe_window=600, http=True, public=True, accepts=["application/json"])
def charge(order: Order, meta: JobMetadata) -> None:
    gateway.charge(order.order_id, order.cents)


def submit_checkout(order: Order) -> str:
    """What the checkout request handler does: one job per order, deduplicated on the order id."""
    return charge.group(order.order_id).dedupe(order.order_id).push(order)


def main() -> None:
    with app.local() as local:
        order = Order("order-1001", 4999, "ada@example.com")
        first = submit_checkout(order)
        second = submit_checkout(order)  # the user clicked "Pay" twice
        submit_checkout(Order("order-1002", 1500, "grace@example.com"))
        local.drain(timeout=30)
    print(f"double submit returned the same job id: {first == second}")
    print(f"charges: {gateway.charges}")


if __name__ == "__main__":
    main()
