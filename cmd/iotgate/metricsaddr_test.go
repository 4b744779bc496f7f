package main

import "testing"

func TestOpenToNetwork(t *testing.T) {
	tests := []struct {
		addr string
		want bool
	}{
		{":9090", true},
		{"0.0.0.0:9090", true},
		{"[::]:9090", true},
		{"192.168.1.10:9090", true},
		{"10.0.0.1:9090", true},
		{"metrics.internal:9090", true},
		{"[2001:db8::1]:9090", true},
		{"no-port", true},
		{"127.0.0.1:9090", false},
		{"127.0.0.2:9090", false},
		{"[::1]:9090", false},
		{"localhost:9090", false},
		{"LOCALHOST:9090", false},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			if got := openToNetwork(tt.addr); got != tt.want {
				t.Errorf("openToNetwork(%q) = %v, want %v", tt.addr, got, tt.want)
			}
		})
	}
}
