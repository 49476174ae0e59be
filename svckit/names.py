"""The system's names, each defined once: its services and their default ports, the event
topics (who publishes, who consumes) and their dead-letter queues, the consumer groups, and
the collections each service keeps. The services, the stack, the CLI, the benchmarks and the
tests import them from here; nothing else spells them.

Depends on nothing, so anything can import it.
"""

from __future__ import annotations

# --- services ------------------------------------------------------------------------------

ACCOUNTS = "accounts"
ORDERS = "orders"
FULFILLMENT = "fulfillment"
CATALOG = "catalog"
SERVICES = (ACCOUNTS, ORDERS, FULFILLMENT, CATALOG)

GRPC_PORTS = {ACCOUNTS: 50051, ORDERS: 50052, FULFILLMENT: 50053, CATALOG: 50054}
"""Each service's gRPC port on one machine (`storefront run`); in Kubernetes all use 50051."""
METRICS_PORTS = {ACCOUNTS: 9464, ORDERS: 9465, FULFILLMENT: 9466, CATALOG: 9467}


def source(service: str) -> str:
    """The CloudEvents `source` of the events a service publishes."""
    return f"//storefront/{service}"


# --- topics --------------------------------------------------------------------------------

CUSTOMER_CHANGES = "accounts.customer.change"
"""accounts -> orders: CustomerChanged and CustomerDeleted, keyed by customer id."""
ORDER_FULFILLMENT = "orders.order.fulfill"
"""orders -> fulfillment: FulfillmentRequested and FulfillmentCancelled, keyed by order id."""
ORDER_STATUS = "fulfillment.order.change"
"""fulfillment -> orders: OrderStatusChanged, keyed by order id."""
PRODUCT_CHANGES = "catalog.product.change"
"""catalog -> orders: ProductChanged, keyed by product id."""
ORDER_CHANGES = "orders.order.change"
"""orders -> anyone: OrderChanged, keyed by order id (the order's lifecycle as facts)."""
TOPICS = (CUSTOMER_CHANGES, ORDER_FULFILLMENT, ORDER_STATUS, PRODUCT_CHANGES, ORDER_CHANGES)

PUBLISHES: dict[str, tuple[str, ...]] = {
    ACCOUNTS: (CUSTOMER_CHANGES,),
    ORDERS: (ORDER_FULFILLMENT, ORDER_CHANGES),
    FULFILLMENT: (ORDER_STATUS,),
    CATALOG: (PRODUCT_CHANGES,),
}
CONSUMES: dict[str, tuple[str, ...]] = {
    ORDERS: (CUSTOMER_CHANGES, ORDER_STATUS, PRODUCT_CHANGES),
    FULFILLMENT: (ORDER_FULFILLMENT,),
}
CONSUMER_OF = {topic: service for service, topics in CONSUMES.items() for topic in topics}
"""The service that consumes each topic, and so owns its read model and its DLQ."""

DLQ_SUFFIX = ".dlq"


def dlq_topic(topic: str) -> str:
    """Where the consumer of `topic` parks what it cannot apply."""
    return topic + DLQ_SUFFIX


DLQ_TOPICS = tuple(dlq_topic(t) for t in TOPICS)
ALL_TOPICS = (*TOPICS, *DLQ_TOPICS)
"""Every topic the system uses: the event topics and their dead-letter twins."""


def consumer_group(service: str, run: str = "") -> str:
    """A service's consumer group: ``<service>-svc``, or ``<service>-svc.<run>`` for one of
    several runs sharing a broker (tests). The broker's ACLs grant each service the groups
    under its own name only (docs/security.md)."""
    return f"{run_groups_prefix(service)}{run}" if run else f"{service}-svc"


def run_groups_prefix(service: str) -> str:
    """What every per-run group of `service` starts with (and its DLQ-replay group)."""
    return f"{service}-svc."


def dlq_replay_group(group: str) -> str:
    """The group whose committed offsets record how far a service's DLQ replays got: under
    the service's own groups (``orders-svc.dlq-replay``), which its ACLs grant."""
    return f"{group}.dlq-replay"


# --- collections ---------------------------------------------------------------------------

CUSTOMERS = "customer.accounts"
"""accounts: the customers, the system of record (live documents and tombstones)."""
ORDER_DOCUMENTS = "customer.orders"
"""orders: the orders and their status histories."""
CUSTOMER_COPIES = "customers"
"""orders: its copy of each customer, from CUSTOMER_CHANGES."""
PRODUCT_COPIES = "products"
"""orders: its copy of each product, from PRODUCT_CHANGES."""
FULFILLMENTS = "fulfillment.requests"
"""fulfillment: one fulfillment per approved order, keyed by order id."""
PRODUCTS = "catalog.products"
"""catalog: the products, the system of record."""
AGGREGATES = {
    ACCOUNTS: CUSTOMERS,
    ORDERS: ORDER_DOCUMENTS,
    FULFILLMENT: FULFILLMENTS,
    CATALOG: PRODUCTS,
}
"""Each service's aggregate collection, where its outbox entries wait to be published."""
