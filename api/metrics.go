package api

import (
	"context"
	"database/sql"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/devices"
	"github.com/iotgate/iotgate/webhooks"
)

// XMPPStats is what the metrics read from the XMPP connection.
type XMPPStats interface {
	Health(ctx context.Context) (ok bool, since time.Time, err error)
	Reconnects() uint64
	PendingIQs() int
}

// MetricsSources are the parts whose state the metrics read when scraped.
// Nil fields leave their metrics out.
type MetricsSources struct {
	// Instance, when set, is the constant label instance=<id> on every
	// metric: several instances' series stay apart (IOTGATE_INSTANCE_ID).
	Instance string
	XMPP     XMPPStats
	// OnlineDevices counts devices with an available resource.
	OnlineDevices func() int
	// RateLimited counts stanzas refused for exceeding a device's rate.
	RateLimited func() uint64
	// QueueFull counts stanzas (readings, presence) dropped or refused
	// because their sender's lane queue was full.
	QueueFull func() uint64
	// Unserved counts device stanzas in no namespace iotgate serves.
	Unserved func() uint64
	// HeldReadings counts message readings waiting for the database.
	HeldReadings func() int
	// PagesFromMemory counts pages of readings served from the device
	// service's memory; ReadingCacheBytes is the memory it holds for them.
	PagesFromMemory   func() uint64
	ReadingCacheBytes func() int
	// OversizeStanzas counts incoming stanzas skipped for exceeding the
	// stanza size or depth limit.
	OversizeStanzas func() uint64
	// DomainRefused counts stanzas refused because their sender's
	// domain is outside the device allow-list.
	DomainRefused func() uint64
	// DB is the database pool, for its connection statistics.
	DB *sql.DB
	// Webhooks is the webhook dispatcher, for its deliveries and lag.
	Webhooks WebhookStats
	// Events is the event hub, for its streams' figures.
	Events EventStats
	// EventsWritten counts the events this instance committed.
	EventsWritten func() uint64
}

// EventStats is what the metrics read from the event hub.
type EventStats interface {
	Subscribers() int
	Delivered() uint64
	CutOff() uint64
}

// WebhookStats is what the metrics read from the webhook dispatcher.
type WebhookStats interface {
	// Deliveries counts deliveries by outcome (webhooks.Outcomes).
	Deliveries() map[string]uint64
	// Lag is the largest lag of the webhooks delivered here: event ids
	// behind the log and the oldest undelivered event's age.
	Lag() (events int64, seconds float64)
}

var _ WebhookStats = (*webhooks.Dispatcher)(nil)

// Metrics is iotgate's Prometheus registry. It also receives the ingest
// path's measurements (it is a devices.Observer).
type Metrics struct {
	reg       *prometheus.Registry
	r         prometheus.Registerer // reg, adding the instance label
	accepted  prometheus.Counter
	refused   *prometheus.CounterVec
	batchSize prometheus.Histogram
	commit    prometheus.Histogram
	commands  *prometheus.CounterVec
	cmdTime   prometheus.Histogram
}

var _ devices.Observer = (*Metrics)(nil)

// NewMetrics returns a registry with iotgate's metrics and the Go runtime's.
func NewMetrics(src MetricsSources) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.r = m.reg
	if src.Instance != "" {
		m.r = prometheus.WrapRegistererWith(prometheus.Labels{"instance": src.Instance}, m.reg)
	}
	m.accepted = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "iotgate_readings_accepted_total", Help: "Readings validated and committed.",
	})
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "iotgate_readings_refused_total", Help: "Readings not stored, by reason (invalid, unregistered, unavailable, queue_full).",
	}, []string{"reason"})
	for _, r := range []string{devices.RefusedInvalid, devices.RefusedUnregistered, devices.RefusedUnavailable, devices.RefusedQueueFull} {
		m.refused.WithLabelValues(r)
	}
	m.batchSize = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "iotgate_ingest_batch_readings", Help: "Readings per group commit.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 11),
	})
	m.commit = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "iotgate_ingest_commit_seconds", Help: "Duration of one group commit of readings.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
	})
	m.commands = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "iotgate_commands_total", Help: "Commands that ended, by status and error code.",
	}, []string{"status", "code"})
	m.cmdTime = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "iotgate_command_seconds", Help: "Time from a command's creation to its successful answer.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
	})
	m.r.MustRegister(m.accepted, m.refused, m.batchSize, m.commit, m.commands, m.cmdTime,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	if x := src.XMPP; x != nil {
		m.r.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "iotgate_xmpp_up", Help: "1 while the component stream is established."},
				func() float64 {
					if ok, _, _ := x.Health(context.Background()); ok {
						return 1
					}
					return 0
				}),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "iotgate_xmpp_reconnects_total", Help: "Times the component stream was re-established."},
				func() float64 { return float64(x.Reconnects()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "iotgate_xmpp_pending_iqs", Help: "IQs sent and waiting for an answer."},
				func() float64 { return float64(x.PendingIQs()) }),
		)
	}
	if f := src.OnlineDevices; f != nil {
		m.r.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "iotgate_devices_online", Help: "Devices with an available resource."},
			func() float64 { return float64(f()) }))
	}
	if f := src.RateLimited; f != nil {
		m.r.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "iotgate_xmpp_rate_limited_total", Help: "Device stanzas refused for exceeding the device's rate."},
			func() float64 { return float64(f()) }))
	}
	if f := src.QueueFull; f != nil {
		m.r.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "iotgate_xmpp_queue_full_total", Help: "Device stanzas (readings, presence) dropped or refused because their lane's queue was full."},
			func() float64 { return float64(f()) }))
	}
	if f := src.Unserved; f != nil {
		m.r.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "iotgate_xmpp_unserved_total", Help: "Stanzas to iotgate whose payloads are in no namespace of a registered schema (IQs answered service-unavailable, messages dropped)."},
			func() float64 { return float64(f()) }))
	}
	if f := src.OversizeStanzas; f != nil {
		m.r.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "iotgate_xmpp_stanzas_oversize_total", Help: "Incoming stanzas skipped (and refused) for exceeding the stanza size or depth limit; the stream goes on."},
			func() float64 { return float64(f()) }))
	}
	if f := src.DomainRefused; f != nil {
		m.r.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "iotgate_xmpp_domain_refused_total", Help: "Stanzas refused because their sender's domain is outside IOTGATE_DEVICE_DOMAINS."},
			func() float64 { return float64(f()) }))
	}
	if f := src.HeldReadings; f != nil {
		m.r.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "iotgate_readings_held", Help: "Message readings held for another commit attempt while the database is unavailable."},
			func() float64 { return float64(f()) }))
	}
	if f := src.PagesFromMemory; f != nil {
		m.r.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "iotgate_reading_pages_from_memory_total", Help: "Pages of readings served from memory (the newest readings kept per device), without a query."},
			func() float64 { return float64(f()) }))
	}
	if f := src.ReadingCacheBytes; f != nil {
		m.r.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "iotgate_reading_cache_bytes", Help: "Memory held by the newest readings kept per device for pages (bounded by IOTGATE_READING_CACHE_BYTES)."},
			func() float64 { return float64(f()) }))
	}
	if f := src.EventsWritten; f != nil {
		m.r.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "iotgate_events_written_total", Help: "Events this instance committed to the event log."},
			func() float64 { return float64(f()) }))
	}
	if ev := src.Events; ev != nil {
		m.r.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "iotgate_event_streams", Help: "Event streams (GET /v1/events) connected to this instance."},
				func() float64 { return float64(ev.Subscribers()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "iotgate_event_stream_events_total", Help: "Events handed to event streams, replays included."},
				func() float64 { return float64(ev.Delivered()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "iotgate_event_streams_cut_off_total", Help: "Event streams disconnected for reading too slowly (backlog bound exceeded)."},
				func() float64 { return float64(ev.CutOff()) }),
		)
	}
	if src.DB != nil {
		m.r.MustRegister(collectors.NewDBStatsCollector(src.DB, "iotgate"))
	}
	if w := src.Webhooks; w != nil {
		for _, o := range webhooks.Outcomes {
			m.r.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "iotgate_webhook_deliveries_total",
				Help: "Webhook deliveries (POSTs of a batch), by outcome (ok, http_error, timeout, network).", ConstLabels: prometheus.Labels{"outcome": o}},
				func() float64 { return float64(w.Deliveries()[o]) }))
		}
		m.r.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "iotgate_webhook_lag_events", Help: "The largest number of event ids a webhook delivered by this instance is behind the log."},
				func() float64 { e, _ := w.Lag(); return float64(e) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "iotgate_webhook_lag_seconds", Help: "The age of the oldest event a webhook delivered by this instance has not delivered yet."},
				func() float64 { _, s := w.Lag(); return s }),
		)
	}
	return m
}

// ReadingsCommitted implements devices.Observer.
func (m *Metrics) ReadingsCommitted(n int, d time.Duration) {
	m.accepted.Add(float64(n))
	m.batchSize.Observe(float64(n))
	m.commit.Observe(d.Seconds())
}

// CommandFinished implements devices.Observer.
func (m *Metrics) CommandFinished(status iotgate.CommandStatus, code string, d time.Duration) {
	m.commands.WithLabelValues(string(status), code).Inc()
	if status == iotgate.CommandSucceeded && d > 0 {
		m.cmdTime.Observe(d.Seconds())
	}
}

// ReadingRefused implements devices.Observer.
func (m *Metrics) ReadingRefused(reason string) { m.refused.WithLabelValues(reason).Inc() }

// Handler serves the metrics in Prometheus' text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.r})
}

// Registry returns where other parts register their metrics: they get
// the instance label too.
func (m *Metrics) Registry() prometheus.Registerer { return m.r }
