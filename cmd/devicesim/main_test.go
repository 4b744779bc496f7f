package main

import (
	"io"
	"testing"

	"github.com/iotgate/iotgate/internal/device/sim"
)

func TestParseConfig(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		// want is each device's behaviour, in order.
		want    []string
		wantErr bool
	}{
		{name: "Defaults", want: []string{"normal", "normal", "normal"}},
		{name: "Counts", args: []string{"-devices", "5", "-slow", "1", "-silent", "1", "-offline", "2"},
			want: []string{"normal", "slow", "silent", "offline", "offline"}},
		{name: "Fractions", args: []string{"-devices", "4", "-slow", "0.25", "-silent", "50%"},
			want: []string{"normal", "slow", "silent", "silent"}},
		{name: "All", args: []string{"-devices", "2", "-offline", "100%"}, want: []string{"offline", "offline"}},
		{name: "Remote", args: []string{"-addr", "192.0.2.1:5222", "-allow-remote"}, want: []string{"normal", "normal", "normal"}},
		{name: "ErrTooMany", args: []string{"-devices", "2", "-slow", "1", "-silent", "2"}, wantErr: true},
		{name: "ErrFraction", args: []string{"-slow", "1.5"}, wantErr: true},
		{name: "ErrCount", args: []string{"-slow", "4"}, wantErr: true},
		{name: "ErrShare", args: []string{"-slow", "some"}, wantErr: true},
		{name: "ErrDevices", args: []string{"-devices", "0"}, wantErr: true},
		{name: "ErrDevicesMax", args: []string{"-devices", "1001"}, wantErr: true},
		{name: "ErrRate", args: []string{"-rate", "51"}, wantErr: true},
		{name: "ErrVia", args: []string{"-via", "carrier-pigeon"}, wantErr: true},
		{name: "ErrSchema", args: []string{"-schema", "toaster"}, wantErr: true},
		{name: "ErrInvalid", args: []string{"-invalid", "2"}, wantErr: true},
		{name: "ErrDuration", args: []string{"-duration", "25h"}, wantErr: true},
		{name: "ErrDurationZero", args: []string{"-duration", "0"}, wantErr: true},
		{name: "ErrRemoteAddr", args: []string{"-addr", "192.0.2.1:5222"}, wantErr: true},
		{name: "ErrRemoteName", args: []string{"-addr", "xmpp.example.com:5222"}, wantErr: true},
		{name: "ErrRemoteURL", args: []string{"-register-with-iotgate", "http://192.0.2.1:8080"}, wantErr: true},
		{name: "ErrArgs", args: []string{"extra"}, wantErr: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseConfig(tt.args, io.Discard)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error: %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			var got []string
			for _, d := range cfg.sim.Devices {
				got = append(got, d.Behaviour.String())
			}
			if len(got) != len(tt.want) {
				t.Fatalf("behaviours = %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("behaviours = %v, want %v", got, tt.want)
					break
				}
			}
		})
	}
	t.Run("Accounts", func(t *testing.T) {
		cfg, err := parseConfig([]string{"-devices", "2", "-prefix", "ms", "-password", "pw-{user}", "-schema", "multisensor"}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		want := []sim.Device{{User: "ms1", Password: "pw-ms1"}, {User: "ms2", Password: "pw-ms2"}}
		if len(cfg.sim.Devices) != 2 || cfg.sim.Devices[0] != want[0] || cfg.sim.Devices[1] != want[1] {
			t.Errorf("devices = %+v, want %+v", cfg.sim.Devices, want)
		}
		if cfg.schemaName != "multisensor" {
			t.Errorf("schema name = %q, want the kind's", cfg.schemaName)
		}
	})
}
