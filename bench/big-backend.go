// A bench.v1.Items backend for big messages (bench/big-messages.sh): like the peers' backend.go,
// but an item's name is padded to N bytes when the call's metadata has `item-bytes: N`, and
// messages up to 64 MiB are taken and sent (grpc-go's default receive limit is 4 MiB).
// Built in GOPATH mode against the peers' generated package benchpb.
package main

import (
	"benchpb"
	"flag"
	"log"
	"net"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/net/context"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

const small = "a reasonably named catalogue item"

var names sync.Map // padded names by length, built once each: the backend should cost little per call

// name is the small item's name, or that name padded with 'x' to the length in `item-bytes`.
func name(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get("item-bytes")
	if len(v) == 0 {
		return small
	}
	n, err := strconv.Atoi(v[0])
	if err != nil || n <= len(small) {
		return small
	}
	if s, ok := names.Load(n); ok {
		return s.(string)
	}
	s := small + strings.Repeat("x", n-len(small))
	names.Store(n, s)
	return s
}

func item(id int64, name string) *benchpb.Item {
	return &benchpb.Item{Id: id, Name: name, Tags: []string{"red", "large", "sale"},
		Price: &benchpb.Price{Currency: "EUR", Units: 19, Nanos: 990000000}, InStock: true}
}

type items struct{}

func (items) GetItem(ctx context.Context, r *benchpb.GetItemRequest) (*benchpb.Item, error) {
	return item(r.Id, name(ctx)), nil
}

// CreateItem echoes its request: the same bytes come back, so a call moves its size each way.
func (items) CreateItem(_ context.Context, r *benchpb.Item) (*benchpb.Item, error) { return r, nil }

func (items) ListItems(r *benchpb.ListItemsRequest, s benchpb.Items_ListItemsServer) error {
	n := name(s.Context())
	for i := int32(0); i < r.Count; i++ {
		if err := s.Send(item(int64(i), n)); err != nil {
			return err
		}
	}
	return nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:50051", "listen address")
	flag.Parse()
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	// HTTP/2 windows are left at grpc-go's defaults (64 KiB, grown by its BDP estimator).
	s := grpc.NewServer(grpc.MaxRecvMsgSize(64<<20), grpc.MaxSendMsgSize(64<<20))
	benchpb.RegisterItemsServer(s, items{})
	log.Fatal(s.Serve(l))
}
