package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestCounted(t *testing.T) {
	s := &commandsScenario{jids: []string{"cmd0@localhost", "cmd1@localhost", "cmd2@localhost"}}
	errNo := errors.New("no reply")
	// Operations to device 1 fail; the others succeed.
	op, fails := s.counted(func(_ context.Context, i int) error {
		if i%3 == 1 {
			return errNo
		}
		return nil
	})
	for i := range 10 {
		if err := op(context.Background(), i); (err != nil) != (i%3 == 1) {
			t.Errorf("op(%d) = %v: the counted op must return what op returns", i, err)
		}
	}
	for i, want := range []int64{0, 3, 0} { // ops 1, 4 and 7 went to device 1
		if got := fails[i].Load(); got != want {
			t.Errorf("failures at %s = %d, want %d", s.jids[i], got, want)
		}
	}
}

func TestDeviceFailureText(t *testing.T) {
	for _, tt := range []struct {
		name string
		devs []deviceFailure
		want []string
	}{
		{"None", nil, []string{"no failure at any device"}},
		{"SessionUp", []deviceFailure{{jid: "cmd8@localhost", failed: 128}},
			[]string{"failures at 1 of 16 devices: ", "cmd8@localhost 128 (client session up)"}},
		{"SessionEnded", []deviceFailure{
			{jid: "cmd1@localhost", failed: 2, ended: true, err: fmt.Errorf("write: %w", errors.New("i/o timeout"))},
			{jid: "cmd2@localhost", failed: 1, ended: true},
		}, []string{"failures at 2 of 16 devices: ", "cmd1@localhost 2 (client session ended: write: i/o timeout); ", "cmd2@localhost 1 (client session closed)"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := deviceFailureText(tt.devs, 16)
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("deviceFailureText = %q, want it to contain %q", got, w)
				}
			}
		})
	}
}
