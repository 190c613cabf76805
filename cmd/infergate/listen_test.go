package main

import (
	"log/slog"
	"testing"

	"github.com/infergate/infergate/internal/config"
)

func TestListenAddr(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	tests := []struct {
		addr string
		keys bool
		want string
	}{
		{"127.0.0.1:8080", false, "127.0.0.1:8080"},
		{"localhost:0", false, "localhost:0"},
		{"[::1]:9", false, "[::1]:9"},
		{"0.0.0.0:8080", false, "127.0.0.1:8080"},
		{":8080", false, "127.0.0.1:8080"},
		{"10.1.2.3:80", false, "127.0.0.1:80"},
		{"0.0.0.0:8080", true, "0.0.0.0:8080"},
	}
	for _, tc := range tests {
		cfg := config.Default()
		cfg.Addr = tc.addr
		if tc.keys {
			cfg.APIKeys = []config.APIKey{{Name: "a", Key: "0123456789abcdef"}}
		}
		if got := listenAddr(cfg, log); got != tc.want {
			t.Errorf("listenAddr(%q, keys %v) = %q, want %q", tc.addr, tc.keys, got, tc.want)
		}
	}
}
