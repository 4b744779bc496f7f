//go:build integration

package main

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// tokenCLI runs `iotgate token args...` against e's database and returns
// its stdout, stderr and exit status.
func (e *commandsEnv) tokenCLI(args ...string) (string, string, int) {
	e.t.Helper()
	cmd := exec.Command(iotgateBinary(e.t), append([]string{"token"}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range e.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

type tokenBody struct {
	ID         string            `json:"id"`
	Name       string            `json:"name"`
	Scopes     []string          `json:"scopes"`
	Devices    map[string]string `json:"devices"`
	Secret     string            `json:"token"`
	RevokedAt  *string           `json:"revoked_at"`
	LastUsedAt *string           `json:"last_used_at"`
}

type sentByBody struct {
	ID      string `json:"id"`
	Status  string `json:"status"`
	SentBy  string `json:"sent_by"`
	TokenID string `json:"token_id"`
}

// TestE2ETokens: tokens made with the CLI and over REST, used, limited to
// some devices, recorded on commands, and revoked.
func TestE2ETokens(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newCommandsEnv(t, ctx, "prosody")
	g := e.g
	berlin, paris := "berlin1@"+e.xs.Domain(), "paris1@"+e.xs.Domain()
	for jid, site := range map[string]string{berlin: "berlin", paris: "paris"} {
		if code := g.do("POST", "/v1/devices", map[string]any{"jid": jid, "schema": "thermostat", "labels": map[string]string{"site": site}}, nil); code != 201 {
			t.Fatalf("register %s: %d", jid, code)
		}
	}
	devicePath := func(jid string) string { return "/v1/devices/" + url.PathEscape(jid) }
	queue := map[string]any{"payload": setTarget("21"), "mode": "queue"}

	// The CLI prints the secret alone on stdout.
	out, errOut, code := e.tokenCLI("create", "--name", "cli-berlin", "--scopes", "devices:read,commands:send", "--devices", "site=berlin", "--expires", "1h")
	secret := strings.TrimSpace(out)
	if code != 0 || !regexp.MustCompile(`^iotg_[A-Za-z0-9_-]{43}$`).MatchString(secret) || !strings.Contains(errOut, "shown only this once") {
		t.Fatalf("token create: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	id := regexp.MustCompile(`tok_[a-z0-9]+`).FindString(errOut)

	t.Run("Unauthenticated", func(t *testing.T) {
		req, _ := http.NewRequest("GET", g.base+"/v1/devices", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("= %d %q, want 401 with a Bearer challenge", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
		if code := g.doAs("iotg_unknown", "GET", "/v1/devices", nil, nil); code != 401 {
			t.Errorf("unknown token: %d, want 401", code)
		}
	})
	t.Run("LimitedToken", func(t *testing.T) {
		var list struct {
			Items []struct {
				JID string `json:"jid"`
			} `json:"items"`
		}
		if code := g.doAs(secret, "GET", "/v1/devices", nil, &list); code != 200 || len(list.Items) != 1 || list.Items[0].JID != berlin {
			t.Errorf("list = %d %+v, want %s only", code, list, berlin)
		}
		tests := []struct {
			name, method, path string
			body               any
			want               int
		}{
			{"GetInside", "GET", devicePath(berlin), nil, 200},
			{"GetOutside", "GET", devicePath(paris), nil, 404},
			{"StateOutside", "GET", devicePath(paris) + "/state", nil, 404},
			{"CommandOutside", "POST", devicePath(paris) + "/commands", queue, 404},
			{"NoScope", "POST", "/v1/schemas", map[string]string{"name": "x", "xsd": "y"}, 403},
			{"NoAdmin", "GET", "/v1/tokens", nil, 403},
			{"NoMetrics", "GET", "/metrics", nil, 403},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if code := g.doAs(secret, tt.method, tt.path, tt.body, nil); code != tt.want {
					t.Errorf("= %d, want %d", code, tt.want)
				}
			})
		}
	})
	t.Run("SentBy", func(t *testing.T) {
		var mine, admins sentByBody
		if code := g.doAs(secret, "POST", devicePath(berlin)+"/commands", queue, &mine); code != 202 || mine.SentBy != "cli-berlin" || mine.TokenID != id {
			t.Fatalf("command = %d %+v, want 202 sent by cli-berlin (%s)", code, mine, id)
		}
		if code := g.do("POST", devicePath(paris)+"/commands", queue, &admins); code != 202 || admins.SentBy != "bootstrap" {
			t.Fatalf("admin's command = %d %+v, want 202 sent by bootstrap", code, admins)
		}
		var got sentByBody
		if code := g.doAs(secret, "GET", "/v1/commands/"+mine.ID, nil, &got); code != 200 || got.SentBy != "cli-berlin" {
			t.Errorf("GET command = %d %+v", code, got)
		}
		if code := g.doAs(secret, "GET", "/v1/commands/"+admins.ID, nil, nil); code != 404 {
			t.Errorf("GET a paris command with the berlin token = %d, want 404", code)
		}
	})
	t.Run("MetricsOnMainAddr", func(t *testing.T) {
		resp, err := g.client.Get(g.base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		if resp.StatusCode != 200 || !strings.Contains(b.String(), "iotgate_readings_accepted_total") {
			t.Errorf("/metrics = %d %.200s", resp.StatusCode, b.String())
		}
	})
	t.Run("REST", func(t *testing.T) {
		var created tokenBody
		if code := g.do("POST", "/v1/tokens", map[string]any{"name": "rest", "scopes": []string{"schemas:read"}}, &created); code != 201 || !strings.HasPrefix(created.Secret, "iotg_") {
			t.Fatalf("POST /v1/tokens = %d %+v", code, created)
		}
		if code := g.doAs(created.Secret, "GET", "/v1/schemas", nil, nil); code != 200 {
			t.Errorf("new token: %d, want 200", code)
		}
		var got tokenBody
		if code := g.do("GET", "/v1/tokens/"+created.ID, nil, &got); code != 200 || got.LastUsedAt == nil || got.Secret != "" {
			t.Errorf("GET token = %d %+v, want its last use and no secret", code, got)
		}
		if code := g.do("DELETE", "/v1/tokens/"+created.ID, nil, &got); code != 200 || got.RevokedAt == nil {
			t.Errorf("DELETE = %d %+v", code, got)
		}
		// Revoked through this process: refused at once, cache or not.
		if code := g.doAs(created.Secret, "GET", "/v1/schemas", nil, nil); code != 401 {
			t.Errorf("revoked token: %d, want 401", code)
		}
	})
	t.Run("CLIListAndRevoke", func(t *testing.T) {
		out, _, code := e.tokenCLI("list")
		if code != 0 || !strings.Contains(out, id) || !strings.Contains(out, "site=berlin") || strings.Contains(out, secret) {
			t.Fatalf("token list: exit %d\n%s", code, out)
		}
		if _, errOut, code := e.tokenCLI("revoke", id); code != 0 {
			t.Fatalf("token revoke: exit %d: %s", code, errOut)
		}
		// Revoked by another process: refused once the cache entry
		// (10 s) expires.
		deadline := time.Now().Add(time.Minute)
		for g.doAs(secret, "GET", devicePath(berlin), nil, nil) != 401 {
			if time.Now().After(deadline) {
				t.Fatal("token still accepted a minute after revocation")
			}
			time.Sleep(200 * time.Millisecond)
		}
		if _, errOut, code := e.tokenCLI("create", "--name", "x", "--scopes", "root"); code != 2 || !strings.Contains(errOut, "unknown scope") {
			t.Errorf("bad scope: exit %d, %q", code, errOut)
		}
	})
	if t.Failed() {
		t.Logf("iotgate log:\n%s", g.logs.String())
	}
	if strings.Contains(g.logs.String(), secret) || strings.Contains(g.logs.String(), g.token) {
		t.Error("iotgate logged a token")
	}
}
