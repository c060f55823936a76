package grpctarget

import "testing"

func TestCheck(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:9090":       true,
		"localhost:http":       true,
		"[::1]:9090":           true,
		"dns:///personad:9090": true,
		"unix:///run/p.sock":   true,
		"unix:p.sock":          true,
		"127.0.0.1":            false,
		"personad.internal":    false,
		"localhost:90x":        false,
		"localhost:":           false,
		"":                     false,
		"[::1]":                false,
	} {
		if err := Check(addr); (err == nil) != ok {
			t.Errorf("Check(%q) = %v, want ok %v", addr, err, ok)
		}
	}
}
