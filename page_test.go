package iotgate

import "testing"

func TestPageLimit(t *testing.T) {
	for _, c := range []struct{ in, want int }{
		{-1, DefaultPageLimit}, {0, DefaultPageLimit}, {1, 1}, {250, 250},
		{MaxPageLimit, MaxPageLimit}, {MaxPageLimit + 1, MaxPageLimit}, {1 << 40, MaxPageLimit},
	} {
		if got := PageLimit(c.in); got != c.want {
			t.Errorf("PageLimit(%d) = %d, want %d", c.in, got, c.want)
		}
	}
}

func TestPageBytes(t *testing.T) {
	for _, c := range []struct{ in, want int64 }{
		{-1, DefaultPageBytes}, {0, DefaultPageBytes}, {1, 1}, {10 << 20, 10 << 20},
	} {
		if got := PageBytes(c.in); got != c.want {
			t.Errorf("PageBytes(%d) = %d, want %d", c.in, got, c.want)
		}
	}
}
