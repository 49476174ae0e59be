// Command storefront-go-client signs a customer up, picks a product from the catalog, orders
// two (the catalog prices them) and reads the order back over native gRPC with the stubs in
// gen/go, printing the order as JSON.
//
//	TOKEN=$(uv run storefront token --customer ada-lovelace) go run ./examples/go
//
// The token's subject becomes the customer's id. -accounts, -catalog and -orders name the
// services' gRPC addresses (a service port each, or all Envoy's 127.0.0.1:8080).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	accountsv1 "storefront.example/gen/go/storefront/accounts/v1"
	catalogv1 "storefront.example/gen/go/storefront/catalog/v1"
	commonv1 "storefront.example/gen/go/storefront/common/v1"
	ordersv1 "storefront.example/gen/go/storefront/orders/v1"
)

func main() {
	accountsAddr := flag.String("accounts", "127.0.0.1:50051", "AccountsService gRPC address")
	ordersAddr := flag.String("orders", "127.0.0.1:50052", "OrdersService gRPC address")
	catalogAddr := flag.String("catalog", "127.0.0.1:50054", "CatalogService gRPC address")
	flag.Parse()
	token := os.Getenv("TOKEN")
	if token == "" {
		log.Fatal("set TOKEN to a bearer token: TOKEN=$(uv run storefront token --customer ID)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)

	customer, err := accountsv1.NewAccountsServiceClient(dial(*accountsAddr)).CreateCustomer(ctx,
		&accountsv1.CreateCustomerRequest{Customer: &accountsv1.Customer{
			Name:    &commonv1.PersonName{FirstName: "Grace", LastName: "Hopper"},
			Contact: &commonv1.Contact{PrimaryPhone: "555-010-0142", Email: "grace@example.com"},
		}})
	check("CreateCustomer", err)
	products, err := catalogv1.NewCatalogServiceClient(dial(*catalogAddr)).ListProducts(ctx,
		&catalogv1.ListProductsRequest{PageSize: 50})
	check("ListProducts", err)
	var product *catalogv1.Product
	for _, p := range products.Products {
		if product == nil && p.State == catalogv1.ProductState_PRODUCT_STATE_ACTIVE {
			product = p
		}
	}
	if product == nil {
		log.Fatal("the catalog has no active product: load one with `uv run storefront demo`")
	}
	orders := ordersv1.NewOrdersServiceClient(dial(*ordersAddr))
	// A line names a product and a quantity; orders takes title and price from the catalog.
	item := &commonv1.LineItem{Quantity: 2, Product: &commonv1.Product{Id: product.Id}}
	var order *ordersv1.Order
	// Orders learns of the customer (and a new product) from events: FAILED_PRECONDITION until it has.
	for order == nil {
		order, err = orders.CreateOrder(ctx, &ordersv1.CreateOrderRequest{CustomerId: customer.Id,
			Order: &ordersv1.Order{Items: []*commonv1.LineItem{item}}})
		if status.Code(err) == codes.FailedPrecondition {
			time.Sleep(200 * time.Millisecond)
		} else {
			check("CreateOrder", err)
		}
	}
	read, err := orders.GetOrder(ctx, &ordersv1.GetOrderRequest{OrderId: order.OrderId})
	check("GetOrder", err)
	fmt.Println(protojson.Format(read))
}

func dial(addr string) *grpc.ClientConn {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	check("dial "+addr, err)
	return conn
}

func check(what string, err error) {
	if err != nil {
		log.Fatalf("%s: %v", what, err)
	}
}
