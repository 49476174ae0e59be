"""The system, declared once: each service with its ports, its public API (routed by Envoy
and the mesh's gateway), its database and collections, the topics it publishes and the
topics it consumes. The stack, the Kafka ACLs and DLQs, Envoy, Prometheus, the console, the
`storefront` commands and the deployment derive from `SYSTEM`; nothing else lists services.

Adding a service or a consumer is one more `Service(...)` entry (docs/extending.md). The
names below are the ones code refers to (a handler's topic, a repository's collection).
"""

from __future__ import annotations

from topology.model import DeadLetters, Service, System, Topic

__all__ = ["DeadLetters", "Service", "System", "Topic"]

# --- services ------------------------------------------------------------------------------

ACCOUNTS = "accounts"
ORDERS = "orders"
FULFILLMENT = "fulfillment"
CATALOG = "catalog"

# --- topics --------------------------------------------------------------------------------

CUSTOMER_CHANGES = "accounts.customer.change"
ORDER_FULFILLMENT = "orders.order.fulfill"
ORDER_STATUS = "fulfillment.order.change"
PRODUCT_CHANGES = "catalog.product.change"
ORDER_CHANGES = "orders.order.change"

# --- collections ---------------------------------------------------------------------------

CUSTOMERS = "customer.accounts"
ORDER_DOCUMENTS = "customer.orders"
CUSTOMER_COPIES = "customers"
PRODUCT_COPIES = "products"
FULFILLMENTS = "fulfillment.requests"
PRODUCTS = "catalog.products"

# --- the system ----------------------------------------------------------------------------

SYSTEM = System(
    (
        Service(
            ACCOUNTS,
            grpc_port=50051,
            metrics_port=9464,
            admin_port=50061,
            api="storefront.accounts.v1.AccountsService",
            collections={CUSTOMERS: "the customers, the system of record (and tombstones)"},
            aggregate=CUSTOMERS,
            publishes=(
                Topic(
                    CUSTOMER_CHANGES,
                    events=(
                        "storefront.accounts.v1.CustomerChanged",
                        "storefront.accounts.v1.CustomerDeleted",
                    ),
                    key="customer id",
                    compacted=True,
                ),
            ),
        ),
        Service(
            ORDERS,
            grpc_port=50052,
            metrics_port=9465,
            admin_port=50062,
            api="storefront.orders.v1.OrdersService",
            collections={
                ORDER_DOCUMENTS: "the orders and their status histories",
                CUSTOMER_COPIES: f"its copy of each customer, from {CUSTOMER_CHANGES}",
                PRODUCT_COPIES: f"its copy of each product, from {PRODUCT_CHANGES}",
            },
            aggregate=ORDER_DOCUMENTS,
            publishes=(
                Topic(
                    ORDER_FULFILLMENT,
                    events=(
                        "storefront.orders.v1.FulfillmentRequested",
                        "storefront.orders.v1.FulfillmentCancelled",
                    ),
                    key="order id",
                ),
                Topic(
                    ORDER_CHANGES,
                    events=("storefront.orders.v1.OrderChanged",),
                    key="order id",
                    compacted=True,
                ),
            ),
            consumes=(CUSTOMER_CHANGES, ORDER_STATUS, PRODUCT_CHANGES),
        ),
        Service(
            FULFILLMENT,
            grpc_port=50053,
            metrics_port=9466,
            admin_port=50063,
            api="storefront.fulfillment.v1.FulfillmentService",
            collections={FULFILLMENTS: "one fulfillment per approved order, keyed by order id"},
            aggregate=FULFILLMENTS,
            publishes=(
                Topic(
                    ORDER_STATUS,
                    events=("storefront.fulfillment.v1.OrderStatusChanged",),
                    key="order id",
                ),
            ),
            consumes=(ORDER_FULFILLMENT,),
        ),
        Service(
            CATALOG,
            grpc_port=50054,
            metrics_port=9467,
            admin_port=50064,
            api="storefront.catalog.v1.CatalogService",
            collections={PRODUCTS: "the products, the system of record"},
            aggregate=PRODUCTS,
            publishes=(
                Topic(
                    PRODUCT_CHANGES,
                    events=("storefront.catalog.v1.ProductChanged",),
                    key="product id",
                    compacted=True,
                ),
            ),
        ),
    )
)
