// Package grpctarget checks the server addresses the command-line tools
// dial, before gRPC does.
package grpctarget

import (
	"errors"
	"net"
	"strings"
)

// ErrNotHostPort is Check's error.
var ErrNotHostPort = errors.New("want host:port, e.g. 127.0.0.1:9090")

// Check rejects an address that is neither host:port with a port nor a
// gRPC target with a scheme. gRPC would dial one without its port at
// port 443, and report only that port refusing, or later that the
// connection is not ready. A target with a scheme (dns:///host:port,
// unix:///path, passthrough:///…) is left to gRPC.
func Check(addr string) error {
	if strings.Contains(addr, ":/") || strings.HasPrefix(addr, "unix:") {
		return nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return ErrNotHostPort
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return ErrNotHostPort
	}
	return nil
}
