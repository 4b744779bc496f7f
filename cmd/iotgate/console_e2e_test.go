//go:build integration

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/iotgate/iotgate/internal/device/sim"
	"github.com/iotgate/iotgate/internal/servers"
	"github.com/iotgate/iotgate/schemas/examples"
)

// consolePage drives the web console in a real chromium through the
// DevTools protocol; every step is bounded.
type consolePage struct {
	t  *testing.T
	dt *servers.DevTools
	// shots, if set, is the directory the screenshots go to
	// (IOTGATE_SCREENSHOTS: make screenshots).
	shots string
}

// do runs steps within d, failing the test with what the page shows.
func (c *consolePage) do(what string, d time.Duration, steps ...chromedp.Action[chromedp.Void]) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.dt.Ctx, d)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		c.fail("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression in the page.
func consoleEval[T any](c *consolePage, expr string) T {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.dt.Ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		c.fail("evaluate %s: %v", expr, err)
	}
	return v
}

// wait polls a JavaScript predicate until it is true, for at most d.
func (c *consolePage) wait(what string, d time.Duration, predicate string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.dt.Ctx, d+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](predicate,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(d)))
	if err != nil {
		c.fail("%s: not within %s (%s): %v", what, d, predicate, err)
	}
}

// fail fails the test with the page's status line and the start of its
// text.
func (c *consolePage) fail(format string, args ...any) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.dt.Ctx, 5*time.Second)
	defer cancel()
	page, _ := chromedp.Run(ctx, chromedp.Evaluate[string](
		`location.hash + '\n' + (document.querySelector('#status')||{}).textContent + '\n' + document.body.innerText.slice(0, 2000)`))
	c.t.Fatalf("console: %s\npage:\n%s", fmt.Sprintf(format, args...), page)
}

// setValue sets a form control's value as a user's input would, with
// its input and change events.
func (c *consolePage) setValue(sel, v string) {
	c.t.Helper()
	bs, _ := json.Marshal(sel)
	bv, _ := json.Marshal(v)
	if !consoleEval[bool](c, `(() => { const e = document.querySelector(`+string(bs)+`); if (!e) return false;
		e.value = `+string(bv)+`; e.dispatchEvent(new Event('input', {bubbles: true})); e.dispatchEvent(new Event('change', {bubbles: true})); return true; })()`) {
		c.fail("no %s to set", sel)
	}
}

// hash routes the page.
func (c *consolePage) hash(h string) {
	c.t.Helper()
	b, _ := json.Marshal(h)
	consoleEval[any](c, "location.hash = "+string(b))
}

// shot saves a screenshot of the whole page as name, when asked to.
func (c *consolePage) shot(name string) {
	c.t.Helper()
	if c.shots == "" {
		return
	}
	ctx, cancel := context.WithTimeout(c.dt.Ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		c.fail("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(c.shots, name), png, 0o644); err != nil {
		c.t.Fatal(err)
	}
}

// noOverflow checks that the page is no wider than the viewport.
func (c *consolePage) noOverflow(what string) {
	c.t.Helper()
	got := consoleEval[string](c, `(() => {
		const w = document.documentElement.scrollWidth, v = Math.min(window.innerWidth, document.documentElement.clientWidth);
		if (w <= v) return '';
		const wide = [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > v + 1)
			.slice(0, 5).map(e => e.tagName + (e.id ? '#' + e.id : '') + '.' + e.className);
		return 'scrollWidth ' + w + ' > ' + v + ' (innerWidth ' + innerWidth + '): ' + wide.join(', ');
	})()`)
	if got != "" {
		c.t.Errorf("%s at phone width: %s", what, got)
	}
}

// hostileName is a device name a script would run from if the console
// made markup of API data.
const hostileName = `<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>`

// TestE2EConsole runs the web console in headless chromium against the
// real binary with PostgreSQL, Prosody and simulated thermostats: a wrong
// token gets the 401 message (and, repeated, the 429 one); the list shows
// the devices, online or not, live, and filters them; a reading arrives
// on the device's chart from the event stream; a command sent from the
// generated form reaches the device and its answer is shown, refusals
// (json_not_mappable next to its field, device_offline) too; a reload
// keeps the page; the keyboard alone gets around; the schema page shows
// the XSD as text and an example reading; API data never becomes markup;
// a read-only token gets the 403 message; a stopped XMPP server gets the
// banner; at 390x844 nothing is wider than the screen; the browser logs
// no CSP violation. With IOTGATE_SCREENSHOTS=dir (make screenshots) it
// also saves the pages as PNG files there.
func TestE2EConsole(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	e := newCommandsEnv(t, ctx, "prosody")
	g := e.g
	domain := e.xs.Domain()
	jid := func(user string) string { return user + "@" + domain }
	for _, d := range []struct {
		user, name, room string
	}{
		{"thermo1", "Kitchen", "kitchen"},
		{"thermo2", "Hall", "hall"},
		{"lamp1", "", "hall"},
	} {
		body := map[string]any{"jid": jid(d.user), "schema": "thermostat", "name": d.name, "labels": map[string]string{"room": d.room}}
		if code := g.do("POST", "/v1/devices", body, nil); code != 201 {
			t.Fatalf("register %s: %d", d.user, code)
		}
		servers.RegisterUserForTest(t, e.xs, d.user, "pw-"+d.user)
	}
	// A multisensor, never online: its form has JSON inputs.
	if code := g.do("POST", "/v1/schemas", map[string]string{"name": "multisensor", "xsd": string(examples.Multisensor())}, nil); code != 201 {
		t.Fatalf("register the multisensor schema: %d", code)
	}
	// Its name is hostile markup: the console must show it as text.
	if code := g.do("POST", "/v1/devices", map[string]any{"jid": jid("ms1"), "schema": "multisensor", "name": hostileName}, nil); code != 201 {
		t.Fatalf("register ms1: %d", code)
	}
	// Two thermostats run (a reading a second each, every fifth invalid:
	// rejections to show); lamp1 stays offline.
	stats := &sim.Stats{}
	simCtx, stopSim := context.WithCancel(ctx)
	simDone := make(chan error, 1)
	go func() {
		simDone <- sim.Run(simCtx, sim.Config{
			Addr: e.xs.C2SAddr(), Domain: domain, Component: e2eDomain, Kind: "thermostat", Rate: 1, Via: "iq", Seed: 7, Invalid: 0.2,
			Devices: []sim.Device{{User: "thermo1", Password: "pw-thermo1"}, {User: "thermo2", Password: "pw-thermo2"}},
		}, stats)
	}()
	t.Cleanup(func() {
		stopSim()
		select {
		case <-simDone:
		case <-time.After(30 * time.Second):
			t.Error("the simulated devices did not stop within 30s")
		}
	})
	for _, u := range []string{"thermo1", "thermo2"} {
		g.waitState(jid(u), 30*time.Second, "online with a reading", func(s stateBody) bool { return s.Online })
	}

	c := &consolePage{t: t, dt: servers.DevToolsForTest(t), shots: os.Getenv("IOTGATE_SCREENSHOTS")}
	if c.shots != "" {
		if err := os.MkdirAll(c.shots, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	c.do("open the console", 30*time.Second, chromedp.EmulateViewport(1280, 900), chromedp.Navigate(g.base+"/console/"))
	c.wait("the token form", 10*time.Second, `!!document.querySelector('#token-input')`)

	t.Run("WrongToken", func(t *testing.T) {
		c.t = t
		c.do("send a wrong token", 10*time.Second,
			chromedp.SendKeys(chromedp.CSS("#token-input"), "iotg_not-a-token"),
			chromedp.Click(chromedp.CSS("#token-form button")))
		c.wait("the 401 message and the token form again", 10*time.Second,
			`document.querySelector('#status').dataset.code === 'unauthorized' && !!document.querySelector('#token-input')`)
		if msg := consoleEval[string](c, `document.querySelector('#status').textContent`); !strings.Contains(msg, "token was refused") {
			t.Errorf("status %q, want the 401 message", msg)
		}
		if kept := consoleEval[bool](c, `sessionStorage.getItem('iotgate.token') !== null`); kept {
			t.Error("the refused token is still kept")
		}
		// Failed authentications from one client are limited (a burst of
		// 20): the console then says to wait, with the server's delay.
		code := ""
		for i := 0; i < 40 && code != "rate_limited"; i++ {
			consoleEval[any](c, `document.querySelector('#status').dataset.code = '', null`)
			c.setValue("#token-input", "iotg_not-a-token")
			c.do("send a wrong token again", 10*time.Second, chromedp.Click(chromedp.CSS("#token-form button")))
			c.wait("an answer", 10*time.Second, `document.querySelector('#status').dataset.code !== ''`)
			code = consoleEval[string](c, `document.querySelector('#status').dataset.code`)
			if code != "unauthorized" && code != "rate_limited" {
				c.fail("status code %q after a wrong token, want unauthorized or rate_limited", code)
			}
			if code == "unauthorized" {
				c.wait("the token form again", 5*time.Second, `!!document.querySelector('#token-input')`)
			}
		}
		if code != "rate_limited" {
			c.fail("no 429 message after 40 wrong tokens")
		}
		if msg := consoleEval[string](c, `document.querySelector('#status').textContent`); !regexp.MustCompile(`try again in \d+ seconds`).MatchString(msg) {
			t.Errorf("status %q, want the 429 message with Retry-After's seconds", msg)
		}
		c.do("forget the wrong token", 10*time.Second, chromedp.Click(chromedp.CSS("#forget")))
		c.wait("the token form", 5*time.Second, `!!document.querySelector('#token-input')`)
	})

	t.Run("DeviceList", func(t *testing.T) {
		c.t = t
		c.do("sign in", 10*time.Second,
			chromedp.SendKeys(chromedp.CSS("#token-input"), g.token),
			chromedp.Click(chromedp.CSS("#token-form button")))
		c.wait("the four devices", 20*time.Second, `document.querySelectorAll('tr[data-jid]').length === 4`)
		kept := consoleEval[map[string]any](c, `({session: sessionStorage.getItem('iotgate.token'), local: localStorage.length, href: location.href})`)
		if kept["session"] != g.token || kept["local"] != float64(0) || strings.Contains(fmt.Sprint(kept["href"]), g.token) {
			t.Errorf("token kept as %v, want in sessionStorage only", kept)
		}
		rows := consoleEval[map[string]string](c, `Object.fromEntries([...document.querySelectorAll('tr[data-jid]')].map(r =>
			[r.dataset.jid, r.querySelector('.badge').dataset.online + ' ' + (r.querySelector('.last-reading time') ? 'reading' : 'none')]))`)
		want := map[string]string{jid("thermo1"): "true reading", jid("thermo2"): "true reading", jid("lamp1"): "false none", jid("ms1"): "false none"}
		if fmt.Sprint(rows) != fmt.Sprint(want) {
			t.Errorf("rows %v, want %v", rows, want)
		}
		// The last reading times follow the event stream.
		row := `document.querySelector('tr[data-jid=` + strconv.Quote(jid("thermo1")) + `] .last-reading time')`
		first := consoleEval[string](c, row+`.getAttribute('datetime')`)
		c.wait("the list live, a newer reading of thermo1", 20*time.Second,
			`document.querySelector('#live').dataset.mode === 'stream' && Date.parse(`+row+`.getAttribute('datetime')) > Date.parse(`+strconv.Quote(first)+`)`)
		// API data is text, never markup.
		c.wait("ms1's hostile name shown as text", 5*time.Second,
			`document.querySelector('tr[data-jid=`+strconv.Quote(jid("ms1"))+`] a').textContent === `+strconv.Quote(hostileName)+
				` && document.querySelectorAll('main img, main script').length === 0 && window.pwned === undefined`)
		c.shot("devices.png")

		for _, tc := range []struct {
			name, label, online string
			want                []string
		}{
			{"Offline", "", "false", []string{jid("lamp1"), jid("ms1")}},
			{"LabelAndOnline", "room:hall", "true", []string{jid("thermo2")}},
			{"Label", "room:hall", "", []string{jid("lamp1"), jid("thermo2")}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				c.t = t
				c.setValue("#f-label", tc.label)
				c.setValue("#f-online", tc.online)
				c.do("filter", 10*time.Second, chromedp.Click(chromedp.CSS(".filters button")))
				wantJSON, _ := json.Marshal(tc.want)
				c.wait("the filtered list", 10*time.Second, `JSON.stringify([...document.querySelectorAll('tr[data-jid]')].map(r => r.dataset.jid).sort()) === `+
					strconv.Quote(string(wantJSON)))
			})
		}
		// An online-only list follows presence: lamp1 joins it when it
		// comes online and leaves it when it goes offline, without a
		// reload (the same table all along).
		t.Run("OnlineFollowsPresence", func(t *testing.T) {
			c.t = t
			c.setValue("#f-label", "")
			c.setValue("#f-online", "true")
			// The list shown so far is marked: the one to wait for is new.
			consoleEval[any](c, `document.querySelector('#device-list').dataset.old = 'yes', null`)
			c.do("filter", 10*time.Second, chromedp.Click(chromedp.CSS(".filters button")))
			listIs := func(what string, want ...string) {
				t.Helper()
				slices.Sort(want)
				b, _ := json.Marshal(want)
				c.wait(what, 20*time.Second, `document.querySelector('#device-list tbody')?.dataset.mark === 'kept' &&
					JSON.stringify([...document.querySelectorAll('tr[data-jid]')].map(r => r.dataset.jid).sort()) === `+strconv.Quote(string(b)))
			}
			c.wait("the online list, live", 10*time.Second, `location.hash === '#/devices?online=true' && !document.querySelector('#device-list').dataset.old &&
				document.querySelector('#device-list').getAttribute('aria-busy') === 'false' && document.querySelector('#live')?.dataset.mode === 'stream'`)
			consoleEval[any](c, `document.querySelector('#device-list tbody').dataset.mark = 'kept', null`)
			listIs("thermo1 and thermo2 online", jid("thermo1"), jid("thermo2"))
			lampCtx, stopLamp := context.WithCancel(ctx)
			lampDone := make(chan error, 1)
			go func() {
				lampDone <- sim.Run(lampCtx, sim.Config{
					Addr: e.xs.C2SAddr(), Domain: domain, Component: e2eDomain, Kind: "thermostat", Via: "iq", Seed: 11,
					Devices: []sim.Device{{User: "lamp1", Password: "pw-lamp1"}},
				}, &sim.Stats{})
			}()
			stopped := false
			stop := func() {
				if stopped {
					return
				}
				stopped = true
				stopLamp()
				select {
				case <-lampDone:
				case <-time.After(30 * time.Second):
					t.Error("lamp1 did not stop within 30s")
				}
			}
			defer stop()
			listIs("lamp1 joins the list when it comes online", jid("lamp1"), jid("thermo1"), jid("thermo2"))
			stop()
			g.waitState(jid("lamp1"), 30*time.Second, "offline", func(s stateBody) bool { return !s.Online })
			listIs("lamp1 leaves the list when it goes offline", jid("thermo1"), jid("thermo2"))
			if n := consoleEval[string](c, `document.querySelector('#device-count').textContent`); n != "2 devices" {
				t.Errorf("count %q, want 2 devices", n)
			}
		})
		// A label-filtered list follows device events: a device
		// relabelled onto the filter joins it, one deleted leaves it.
		t.Run("LabelFollowsDevices", func(t *testing.T) {
			c.t = t
			bulb := jid("bulb1")
			if code := g.do("POST", "/v1/devices", map[string]any{"jid": bulb, "schema": "thermostat", "name": "Bulb", "labels": map[string]string{"room": "cellar"}}, nil); code != 201 {
				t.Fatalf("register bulb1: %d", code)
			}
			deleted := false
			defer func() {
				if !deleted {
					g.do("DELETE", "/v1/devices/"+url.PathEscape(bulb), nil, nil)
				}
			}()
			c.setValue("#f-label", "room:hall")
			c.setValue("#f-online", "")
			consoleEval[any](c, `document.querySelector('#device-list').dataset.old = 'yes', null`)
			c.do("filter", 10*time.Second, chromedp.Click(chromedp.CSS(".filters button")))
			c.wait("the hall list, live", 10*time.Second, `location.hash === '#/devices?label=room%3Ahall' && !document.querySelector('#device-list').dataset.old &&
				document.querySelector('#device-list').getAttribute('aria-busy') === 'false' && document.querySelector('#live')?.dataset.mode === 'stream'`)
			consoleEval[any](c, `document.querySelector('#device-list tbody').dataset.mark = 'kept', null`)
			for _, step := range []struct {
				what, method string
				body         any
				code         int
				want         []string
			}{
				{"bulb1 relabelled into the hall joins", "PATCH", map[string]any{"labels": map[string]string{"room": "hall"}}, 200, []string{bulb, jid("lamp1"), jid("thermo2")}},
				{"bulb1 deleted leaves", "DELETE", nil, 204, []string{jid("lamp1"), jid("thermo2")}},
			} {
				if code := g.do(step.method, "/v1/devices/"+url.PathEscape(bulb), step.body, nil); code != step.code {
					t.Fatalf("%s bulb1: %d, want %d", step.method, code, step.code)
				}
				deleted = step.method == "DELETE"
				slices.Sort(step.want)
				b, _ := json.Marshal(step.want)
				c.wait(step.what, 20*time.Second, `document.querySelector('#device-list tbody')?.dataset.mark === 'kept' &&
					JSON.stringify([...document.querySelectorAll('tr[data-jid]')].map(r => r.dataset.jid).sort()) === `+strconv.Quote(string(b)))
			}
		})
		t.Run("BadFilter", func(t *testing.T) {
			c.t = t
			c.setValue("#f-label", "no-colon")
			c.setValue("#f-online", "")
			c.do("filter", 10*time.Second, chromedp.Click(chromedp.CSS(".filters button")))
			c.wait("the API's 400 said in place of the list", 10*time.Second,
				`document.querySelector('#status').dataset.code === 'invalid' && !!document.querySelector('#device-list .error-text') && !document.querySelector('tr[data-jid]')`)
		})
		c.t = t
	})

	t.Run("LiveChart", func(t *testing.T) {
		c.t = t
		c.hash("#/devices/" + url.PathEscape(jid("thermo1")))
		c.wait("the chart, live from the event stream", 20*time.Second,
			`!!document.querySelector('#chart canvas') && document.querySelector('#live').dataset.mode === 'stream'`)
		before := consoleEval[int](c, `+document.querySelector('#chart').dataset.points`)
		c.wait("a reading on the chart", 20*time.Second, fmt.Sprintf(`+document.querySelector('#chart').dataset.points > %d && !!document.querySelector('#chart').dataset.last`, before))
		last := consoleEval[string](c, `document.querySelector('#chart').dataset.last`)
		var temp string
		for _, f := range strings.Fields(last) {
			if v, ok := strings.CutPrefix(f, "temperature="); ok {
				temp = v
			}
		}
		shown, err := strconv.ParseFloat(temp, 64)
		if err != nil {
			t.Fatalf("chart's last point %q, want temperature=<number>", last)
		}
		// The value on the chart is one the device sent.
		var page struct {
			Items []struct {
				Data map[string]any `json:"data"`
			} `json:"items"`
		}
		if code := g.do("GET", "/v1/devices/"+url.PathEscape(jid("thermo1"))+"/readings?limit=50", nil, &page); code != 200 {
			t.Fatalf("GET readings: %d", code)
		}
		if !slices.ContainsFunc(page.Items, func(r struct {
			Data map[string]any `json:"data"`
		}) bool {
			return r.Data["temperature"] == shown
		}) {
			t.Errorf("the chart shows temperature %v, which no recent reading has", shown)
		}
		// Fields of different ranges have their own scales and axes:
		// temperature (with target, of the same XSD type: the unit of more
		// fields, on the left) and humidity (on the right), as uPlot
		// itself reports them; the legend says which axis each uses.
		c.wait("the scales drawn", 10*time.Second, `!!document.querySelector('#chart').dataset.scales`)
		var scales []struct {
			Field, Scale, Axis string
			Min, Max           *float64
		}
		if err := json.Unmarshal([]byte(consoleEval[string](c, `document.querySelector('#chart').dataset.scales`)), &scales); err != nil {
			t.Fatal(err)
		}
		byField := map[string]int{}
		for i, s := range scales {
			byField[s.Field] = i
		}
		ti, ok1 := byField["temperature"]
		hi, ok2 := byField["humidity"]
		if !ok1 || !ok2 {
			t.Fatalf("chart scales %+v, want temperature and humidity", scales)
		}
		tsc, hsc := scales[ti], scales[hi]
		for _, tc := range []struct {
			name      string
			got, want any
			same      bool
		}{
			{"scale", tsc.Scale, hsc.Scale, false},
			{"axis", tsc.Axis, hsc.Axis, false},
			{"temperature axis", tsc.Axis, "left", true},
			{"humidity axis", hsc.Axis, "right", true},
		} {
			if (tc.got == tc.want) != tc.same {
				t.Errorf("%s: temperature's %v, humidity's %v (same: want %v)", tc.name, tc.got, tc.want, tc.same)
			}
		}
		if ri, ok := byField["target"]; ok && scales[ri].Scale != tsc.Scale {
			t.Errorf("target on scale %q, temperature on %q: want one scale for one type", scales[ri].Scale, tsc.Scale)
		}
		if tsc.Min == nil || tsc.Max == nil || hsc.Min == nil || hsc.Max == nil || (*tsc.Min == *hsc.Min && *tsc.Max == *hsc.Max) {
			t.Errorf("scale ranges temperature %v..%v, humidity %v..%v: want two ranges", tsc.Min, tsc.Max, hsc.Min, hsc.Max)
		}
		legend := consoleEval[[]string](c, `[...document.querySelectorAll('#chart .u-legend .u-series .u-label')].map(e => e.textContent)`)
		for _, s := range scales {
			if want := s.Field + " (" + s.Axis + " axis)"; s.Axis != "" && !slices.Contains(legend, want) {
				t.Errorf("legend %q, want %q (uPlot draws %s's axis on the %s)", legend, want, s.Field, s.Axis)
			}
		}
		// Another history window: the chart is drawn again from the
		// aggregate endpoint, with one chart only.
		c.setValue("#chart-window", "1")
		c.wait("the last hour's chart", 20*time.Second,
			`document.querySelectorAll('#chart canvas').length === 1 && document.querySelector('#chart .chart-note').textContent.includes('last hour in 30s') &&
			 +document.querySelector('#chart').dataset.points > 0`)
		c.setValue("#chart-window", "0")
		c.wait("the last 15 minutes again", 20*time.Second,
			`document.querySelectorAll('#chart canvas').length === 1 && document.querySelector('#chart .chart-note').textContent.includes('last 15 minutes') &&
			 +document.querySelector('#chart').dataset.points > 0`)
		c.wait("a rejection with its reason", 20*time.Second,
			`[...document.querySelectorAll('#rejections td.reason')].some(td => td.textContent.length > 10)`)
		c.wait("the latest reading's table", 5*time.Second, `document.querySelector('#latest tr[data-field="temperature"] td')?.textContent !== ''`)
		if c.shots != "" {
			// A line rather than a dot: a reading a second.
			c.wait("20 points on the chart", 40*time.Second, `+document.querySelector('#chart').dataset.points >= 20`)
		}
		c.shot("device.png")
	})

	t.Run("Command", func(t *testing.T) {
		c.t = t
		c.wait("the command form", 10*time.Second,
			`document.querySelector('#cmd-element')?.value === 'set' && !!document.querySelector('.field[data-key="target"] input')`)
		// Refused before it is sent: out of the schema's range.
		c.setValue(`.field[data-key="target"] input`, "999")
		c.do("send an invalid command", 10*time.Second, chromedp.Click(chromedp.CSS("#cmd-send")))
		c.wait("the refusal", 10*time.Second, `document.querySelector('#outcome').dataset.status === 'refused'`)
		answered := stats.Answered.Load()
		heat := consoleEval[string](c, `[...document.querySelectorAll('.field[data-key="mode"] option')].find(o => o.textContent === 'heat').value`)
		c.setValue(`.field[data-key="target"] input`, "")
		c.setValue(`.field[data-key="mode"] select`, heat)
		c.do("send a command", 10*time.Second,
			chromedp.SendKeys(chromedp.CSS(`.field[data-key="target"] input`), "23.5"),
			chromedp.Click(chromedp.CSS("#cmd-send")))
		c.wait("the device's answer, the form free again", 30*time.Second,
			`document.querySelector('#outcome').dataset.status === 'succeeded' && !!document.querySelector('#answer') && !document.querySelector('#cmd-send').disabled`)
		var answer map[string]any
		if err := json.Unmarshal([]byte(consoleEval[string](c, `document.querySelector('#answer').textContent`)), &answer); err != nil {
			t.Fatal(err)
		}
		if answer["target"] != 23.5 || answer["mode"] != "heat" {
			t.Errorf("answer shown %v, want the state with target 23.5 and mode heat", answer)
		}
		if stats.Answered.Load() <= answered {
			t.Error("the device answered no command")
		}
		c.wait("the command in the recent list", 10*time.Second,
			`[...document.querySelectorAll('#commands tr[data-command] .cstatus')].some(s => s.textContent === 'succeeded')`)
		c.do("scroll to the form", 5*time.Second, chromedp.ScrollIntoView(chromedp.CSS("#command-section")))
		if c.shots != "" {
			sctx, cancel := context.WithTimeout(c.dt.Ctx, 30*time.Second)
			png, err := chromedp.Run(sctx, chromedp.Screenshot(chromedp.CSS("#command-section")))
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(c.shots, "command.png"), png, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("ReloadAndKeyboard", func(t *testing.T) {
		c.t = t
		// A reload keeps the page (the hash) and the token (the tab's
		// sessionStorage).
		device := "#/devices/" + url.PathEscape(jid("thermo2"))
		c.hash(device)
		c.wait("thermo2's page", 20*time.Second, `document.querySelector('#device-title')?.textContent === 'Hall'`)
		c.do("reload", 20*time.Second, chromedp.Reload())
		c.wait("thermo2's page again", 20*time.Second,
			`location.hash === `+strconv.Quote(device)+` && document.querySelector('#device-title')?.textContent === 'Hall' && !!document.querySelector('#chart canvas')`)
		// From a fresh page, the keyboard alone: the skip link first,
		// with a visible focus ring, then the links.
		c.hash("#/devices")
		c.do("reload", 20*time.Second, chromedp.Reload())
		c.wait("the list", 20*time.Second, `document.querySelectorAll('tr[data-jid]').length === 4`)
		c.do("Tab", 5*time.Second, chromedp.KeyEvent(kb.Tab))
		c.wait("the skip link focused, on screen, with a focus ring", 5*time.Second,
			`document.activeElement.id === 'skip' && getComputedStyle(document.activeElement).outlineStyle !== 'none' &&
			 document.activeElement.getBoundingClientRect().left >= 0`)
		c.do("Enter", 5*time.Second, chromedp.KeyEvent(kb.Enter))
		c.wait("the main content focused", 5*time.Second, `document.activeElement.id === 'main' && location.hash === '#/devices'`)
		for i := 0; i < 30 && !consoleEval[bool](c, `document.activeElement.matches('tr[data-jid] a')`); i++ {
			c.do("Tab", 5*time.Second, chromedp.KeyEvent(kb.Tab))
		}
		target := consoleEval[string](c, `document.activeElement.matches('tr[data-jid] a') ? document.activeElement.closest('tr').dataset.jid : ''`)
		if target == "" {
			c.fail("no device link reached with 30 Tabs")
		}
		c.do("Enter", 5*time.Second, chromedp.KeyEvent(kb.Enter))
		c.wait("the device's page", 10*time.Second, `location.hash === '#/devices/' + encodeURIComponent(`+strconv.Quote(target)+`)`)
	})

	t.Run("NotMappable", func(t *testing.T) {
		c.t = t
		c.hash("#/devices/" + url.PathEscape(jid("ms1")))
		c.wait("ms1's page: no chart, a form with JSON inputs", 20*time.Second,
			`document.querySelector('#chart .chart-note')?.textContent === 'No numeric field to chart.' &&
			 document.querySelector('#cmd-element')?.value === 'report' && !!document.querySelector('.field[data-key="sensor"] textarea')`)
		// sensor may repeat: its JSON must be an array.
		c.setValue(`.field[data-key="@node"] input`, "n1")
		c.setValue(`.field[data-key="sensor"] textarea`, `{"@id": "t1", "value": 1}`)
		c.do("send data with no XML form", 10*time.Second, chromedp.Click(chromedp.CSS("#cmd-send")))
		c.wait("the reason next to the field", 10*time.Second,
			`document.querySelector('#outcome').dataset.status === 'refused' &&
			 document.querySelector('.field[data-key="sensor"] textarea').getAttribute('aria-invalid') === 'true' &&
			 document.querySelector('.field[data-key="sensor"] .field-error').textContent.includes('array')`)
		if code := consoleEval[string](c, `document.querySelector('#outcome .error-text').dataset.code`); code != "json_not_mappable" {
			t.Errorf("outcome code %q, want json_not_mappable", code)
		}
	})

	t.Run("OfflineDevice", func(t *testing.T) {
		c.t = t
		c.hash("#/devices/" + url.PathEscape(jid("lamp1")))
		c.wait("lamp1's form", 20*time.Second, `!!document.querySelector('.field[data-key="target"] input')`)
		for _, tc := range []struct {
			name   string
			queue  bool
			status string
			code   string
		}{
			{"Refused", false, "refused", "device_offline"},
			{"Queued", true, "queued", ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				c.t = t
				c.setValue(`.field[data-key="target"] input`, "20")
				consoleEval[any](c, `document.querySelector('#cmd-queue').checked = `+strconv.FormatBool(tc.queue)+`, null`)
				c.do("send", 10*time.Second, chromedp.Click(chromedp.CSS("#cmd-send")))
				c.wait("the outcome "+tc.status, 10*time.Second, `document.querySelector('#outcome').dataset.status === `+strconv.Quote(tc.status))
				if tc.code != "" {
					if got := consoleEval[string](c, `document.querySelector('#outcome .error-text').dataset.code`); got != tc.code {
						t.Errorf("outcome code %q, want %q", got, tc.code)
					}
				}
			})
		}
		c.t = t
	})

	t.Run("SchemaPage", func(t *testing.T) {
		c.t = t
		c.hash("#/schemas/thermostat")
		c.wait("the XSD and an example reading", 20*time.Second,
			`document.querySelector('#xsd')?.textContent.includes('targetNamespace="urn:example:thermostat"') &&
			 !!document.querySelector('#example pre')?.textContent.includes('"temperature"')`)
		// The XSD is text: none of its markup became elements.
		if n := consoleEval[int](c, `document.querySelector('#xsd').children.length`); n != 0 {
			t.Errorf("the XSD's <pre> has %d child elements, want text only", n)
		}
		c.shot("schema.png")
	})

	t.Run("PhoneWidth", func(t *testing.T) {
		c.t = t
		c.do("phone viewport", 10*time.Second, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2),
			chromedp.EmulatePortrait, chromedp.EmulateMobile, chromedp.EmulateTouch))
		for _, tc := range []struct {
			name, hash, ready string
		}{
			{"Devices", "#/devices", `document.querySelectorAll('tr[data-jid]').length === 4`},
			{"Device", "#/devices/" + url.PathEscape(jid("thermo1")), `!!document.querySelector('#chart canvas') && !!document.querySelector('#cmd-send')`},
			{"Schema", "#/schemas/thermostat", `document.querySelector('#xsd')?.textContent.includes('xs:schema')`},
		} {
			t.Run(tc.name, func(t *testing.T) {
				c.t = t
				c.hash(tc.hash)
				c.wait("the page", 20*time.Second, tc.ready)
				c.noOverflow(tc.name)
				switch tc.name {
				case "Devices":
					c.shot("phone.png")
				case "Device":
					// The chart's two axes at phone width.
					c.wait("the chart's scales", 10*time.Second, `!!document.querySelector('#chart').dataset.scales`)
					c.do("scroll to the chart", 5*time.Second, chromedp.ScrollIntoView(chromedp.CSS("#chart-section")))
					if c.shots != "" {
						sctx, cancel := context.WithTimeout(c.dt.Ctx, 30*time.Second)
						png, err := chromedp.Run(sctx, chromedp.Screenshot(chromedp.CSS("#chart-section")))
						cancel()
						if err != nil {
							t.Fatal(err)
						}
						if err := os.WriteFile(filepath.Join(c.shots, "phone-chart.png"), png, 0o644); err != nil {
							t.Fatal(err)
						}
					}
				}
			})
		}
		c.t = t
	})

	t.Run("Forbidden", func(t *testing.T) {
		c.t = t
		var tok struct {
			Token string `json:"token"`
		}
		if code := g.do("POST", "/v1/tokens", map[string]any{"name": "console-read", "scopes": []string{"devices:read"}}, &tok); code != 201 || tok.Token == "" {
			t.Fatalf("create a read-only token: %d", code)
		}
		c.do("desktop viewport", 10*time.Second, chromedp.EmulateViewport(1280, 900))
		c.do("forget the token", 10*time.Second, chromedp.Click(chromedp.CSS("#forget")))
		c.wait("the token form, the token gone", 5*time.Second,
			`!!document.querySelector('#token-input') && sessionStorage.getItem('iotgate.token') === null && document.querySelector('#status').dataset.code === 'forgotten'`)
		c.do("sign in read-only", 10*time.Second,
			chromedp.SendKeys(chromedp.CSS("#token-input"), tok.Token),
			chromedp.Click(chromedp.CSS("#token-form button")))
		// The page shown is still the schema's (the address kept it),
		// which needs schemas:read: the message says which scope is
		// missing.
		c.wait("the 403 message", 10*time.Second,
			`document.querySelector('#status').dataset.code === 'forbidden' && document.querySelector('#status').textContent.includes('lacks the scope')`)
		c.hash("#/devices")
		c.wait("the list", 20*time.Second, `document.querySelectorAll('tr[data-jid]').length === 4`)
		// The device page works without the form.
		c.hash("#/devices/" + url.PathEscape(jid("thermo1")))
		c.wait("the device page without a form", 20*time.Second,
			`!!document.querySelector('#chart canvas') && document.querySelector('#command-section').textContent.includes('schemas:read') && !document.querySelector('#cmd-form')`)
	})

	t.Run("XMPPDown", func(t *testing.T) {
		c.t = t
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if err := e.xs.Stop(sctx); err != nil {
			t.Fatal(err)
		}
		// The banner comes with the next /readyz: at the next page, or
		// within 15 s.
		c.hash("#/devices")
		c.wait("the XMPP banner", 30*time.Second,
			`!document.querySelector('#xmpp').hidden && document.querySelector('#xmpp').textContent.includes("can't reach the XMPP server")`)
		c.shot("xmpp-down.png")
	})

	// Nothing the page did was refused by its CSP or failed in its
	// script (chromium logs the page's console to its stderr).
	for line := range strings.SplitSeq(c.dt.Logs().String(), "\n") {
		if strings.Contains(line, "Content Security Policy") || strings.Contains(line, "Uncaught") {
			t.Errorf("browser log: %s", line)
		}
	}
}
