// Signs a customer up, picks a product from the catalog, orders one (the catalog prices it)
// and reads the order back through Envoy over gRPC-Web, with Connect-ES and the code in
// gen/ts, printing the order as JSON.
//
//   TOKEN=$(uv run storefront token --customer ada-lovelace) npx tsx examples/ts/main.ts
//
// The token's subject becomes the customer's id. STOREFRONT_URL is Envoy's address
// (default http://127.0.0.1:8080).
import { toJsonString } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-node";

import { AccountsService } from "../../gen/ts/storefront/accounts/v1/accounts_pb.js";
import { CatalogService, ProductState } from "../../gen/ts/storefront/catalog/v1/catalog_pb.js";
import { OrderSchema, OrdersService } from "../../gen/ts/storefront/orders/v1/orders_pb.js";

const token = process.env.TOKEN;
if (!token) throw new Error("set TOKEN to a bearer token: TOKEN=$(uv run storefront token --customer ID)");
const bearer: Interceptor = (next) => (req) => {
  req.header.set("authorization", `Bearer ${token}`);
  return next(req);
};
const transport = createGrpcWebTransport({
  baseUrl: process.env.STOREFRONT_URL ?? "http://127.0.0.1:8080",
  httpVersion: "1.1",
  interceptors: [bearer],
  defaultTimeoutMs: 30_000,
});
const accounts = createClient(AccountsService, transport);
const orders = createClient(OrdersService, transport);
const catalog = createClient(CatalogService, transport);

const customer = await accounts.createCustomer({
  customer: {
    name: { firstName: "Katherine", lastName: "Johnson" },
    contact: { primaryPhone: "555-010-0118", email: "katherine@example.com" },
  },
});
const { products } = await catalog.listProducts({ pageSize: 50 });
const product = products.find((p) => p.state === ProductState.ACTIVE);
if (!product) throw new Error("the catalog has no active product: load one with `uv run storefront demo`");
// A line names a product and a quantity; orders takes title and price from the catalog.
const items = [{ quantity: 1, product: { id: product.id } }];
// Orders learns of the customer (and a new product) from events: FAILED_PRECONDITION until it has.
const deadline = Date.now() + 30_000;
async function placeOrder(): Promise<string> {
  try {
    return (await orders.createOrder({ customerId: customer.id, order: { items } })).orderId;
  } catch (err) {
    if (ConnectError.from(err).code !== Code.FailedPrecondition || Date.now() > deadline) throw err;
    await new Promise((resolve) => setTimeout(resolve, 200));
    return placeOrder();
  }
}
const order = await orders.getOrder({ orderId: await placeOrder() });
console.log(toJsonString(OrderSchema, order));
