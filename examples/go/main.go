// Command storefront-go-client signs a customer up, places an order and reads it back over
// native gRPC with the stubs in gen/go, printing the order as JSON.
//
//	TOKEN=$(uv run storefront token --customer ada-lovelace) go run ./examples/go
//
// The token's subject becomes the customer's id. -accounts and -orders name the services'
// gRPC addresses (a service port each, or both Envoy's 127.0.0.1:8080).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	"google.golang.org/genproto/googleapis/type/money"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	accountsv1 "storefront.example/gen/go/storefront/accounts/v1"
	commonv1 "storefront.example/gen/go/storefront/common/v1"
	ordersv1 "storefront.example/gen/go/storefront/orders/v1"
)

func main() {
	accountsAddr := flag.String("accounts", "127.0.0.1:50051", "AccountsService gRPC address")
	ordersAddr := flag.String("orders", "127.0.0.1:50052", "OrdersService gRPC address")
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
	orders := ordersv1.NewOrdersServiceClient(dial(*ordersAddr))
	item := &commonv1.LineItem{Quantity: 2, Product: &commonv1.Product{Id: "sku-7", Title: "Compiler",
		Price: &money.Money{CurrencyCode: "USD", Units: 12}}}
	var order *ordersv1.Order
	// Orders learns of the customer from an event: FAILED_PRECONDITION until it has.
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
