// Command goresolve asks Go's pure resolver (net.Resolver with PreferGo) for
// names, the way a Go service in a container resolves them.
//
// Usage: goresolve -server 127.0.0.1:53 TYPE:NAME...   (TYPE is A, HOST or SRV)
//
// It prints one JSON object per line: {"type","name","records","error",
// "not_found","dials"}, where dials lists the networks ("udp", "tcp") the
// resolver dialled for that lookup: a truncated UDP answer shows up as a
// "tcp" dial after a "udp" one. Standard library only, so it builds offline.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

type result struct {
	Type     string   `json:"type"`
	Name     string   `json:"name"`
	Records  []string `json:"records"`
	Error    string   `json:"error,omitempty"`
	NotFound bool     `json:"not_found"`
	Dials    []string `json:"dials"`
}

func main() {
	server := flag.String("server", "127.0.0.1:53", "DNS server every query is sent to")
	flag.Parse()
	status := 0
	out := json.NewEncoder(os.Stdout)
	for _, arg := range flag.Args() {
		kind, name, ok := strings.Cut(arg, ":")
		if !ok {
			fmt.Fprintf(os.Stderr, "%q is not TYPE:NAME\n", arg)
			os.Exit(2)
		}
		res := lookup(*server, strings.ToUpper(kind), name)
		if res.Error != "" {
			status = 1
		}
		if err := out.Encode(res); err != nil {
			os.Exit(2)
		}
	}
	os.Exit(status)
}

func lookup(server, kind, name string) result {
	var mu sync.Mutex
	res := result{Type: kind, Name: name, Records: []string{}, Dials: []string{}}
	dialer := net.Dialer{Timeout: 2 * time.Second}
	resolver := &net.Resolver{
		PreferGo: true,
		// Every query goes to dnsd whatever resolv.conf says; record the network.
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			mu.Lock()
			res.Dials = append(res.Dials, network)
			mu.Unlock()
			return dialer.DialContext(ctx, network, server)
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var err error
	switch kind {
	case "A":
		var ips []net.IP
		ips, err = resolver.LookupIP(ctx, "ip4", name)
		for _, ip := range ips {
			res.Records = append(res.Records, ip.String())
		}
	case "HOST": // A and AAAA in parallel, as net.Dial does
		res.Records, err = resolver.LookupHost(ctx, name)
	case "SRV":
		var srvs []*net.SRV
		_, srvs, err = resolver.LookupSRV(ctx, "", "", name)
		for _, s := range srvs {
			res.Records = append(res.Records,
				fmt.Sprintf("%d %d %d %s", s.Priority, s.Weight, s.Port, s.Target))
		}
	default:
		err = fmt.Errorf("unknown type %q", kind)
	}
	if err != nil {
		res.Error = err.Error()
		var dnsErr *net.DNSError
		res.NotFound = errors.As(err, &dnsErr) && dnsErr.IsNotFound
	}
	if res.Records == nil {
		res.Records = []string{}
	}
	return res
}
