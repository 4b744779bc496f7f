package main

import (
	"context"
	"log/slog"
)

// serve runs iotgate until ctx ends, then shuts down in reverse order of
// start: HTTP (with commands), ingest, the XMPP stream, the database.
func serve(ctx context.Context, cfg Config, log *slog.Logger) error {
	log.Info("starting iotgate", "instance", cfg.InstanceID, "version", buildVersion(), "domain", cfg.Domain, "xmpp", cfg.XMPPAddr, "http", cfg.HTTPAddr,
		"device_domains", cfg.DeviceDomains.String())
	app, err := New(ctx, cfg, log)
	if err != nil {
		return err
	}
	err = app.Run(ctx)
	app.Shutdown()
	return err
}
