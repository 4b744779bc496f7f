package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Registration is what Register tells iotgate.
type Registration struct {
	// BaseURL is iotgate's REST API, e.g. http://127.0.0.1:8080.
	BaseURL string
	// Schema is the schema's name; Kind picks its XSD (one of Kinds).
	Schema, Kind string
	// JIDs are the devices' bare JIDs.
	JIDs []string
	// Labels are set on devices Register creates.
	Labels map[string]string
	// Token is the API token to send (as Authorization: Bearer); it
	// needs the scopes schemas:read, schemas:write and devices:write.
	Token string
}

// Register registers the schema (unless a schema of that name exists) and
// the devices (those already registered are left as they are) with
// iotgate over its REST API. It returns how many devices it created.
func Register(ctx context.Context, client *http.Client, reg Registration) (int, error) {
	if client == nil {
		client = http.DefaultClient
	}
	xsd, err := Schema(reg.Kind)
	if err != nil {
		return 0, err
	}
	base := strings.TrimRight(reg.BaseURL, "/")
	send := func(ctx context.Context, client *http.Client, method, u string, in any) (int, []byte, error) {
		return call(ctx, client, reg.Token, method, u, in)
	}
	code, body, err := send(ctx, client, http.MethodGet, base+"/v1/schemas/"+url.PathEscape(reg.Schema), nil)
	switch {
	case err != nil:
		return 0, err
	case code == http.StatusNotFound:
		code, body, err = send(ctx, client, http.MethodPost, base+"/v1/schemas",
			map[string]string{"name": reg.Schema, "xsd": string(xsd), "description": "example " + reg.Kind + " (registered by devicesim)"})
		if err != nil {
			return 0, err
		}
		if code != http.StatusCreated {
			return 0, fmt.Errorf("register schema %s: %s", reg.Schema, problem(code, body))
		}
	case code != http.StatusOK:
		return 0, fmt.Errorf("look up schema %s: %s", reg.Schema, problem(code, body))
	}
	created := 0
	for _, jid := range reg.JIDs {
		code, body, err := send(ctx, client, http.MethodPost, base+"/v1/devices",
			map[string]any{"jid": jid, "schema": reg.Schema, "name": "simulated " + reg.Kind, "labels": reg.Labels})
		if err != nil {
			return created, err
		}
		switch code {
		case http.StatusCreated:
			created++
		case http.StatusConflict:
		default:
			return created, fmt.Errorf("register device %s: %s", jid, problem(code, body))
		}
	}
	return created, nil
}

// call sends a JSON request and returns the answer's status and body.
func call(ctx context.Context, client *http.Client, token, method, u string, in any) (int, []byte, error) {
	var rd io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, u, err)
	}
	return resp.StatusCode, body, nil
}

// problem describes an error answer: its code and message if it has
// iotgate's error shape, else its status and the start of its body.
func problem(code int, body []byte) string {
	var p struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &p) == nil && p.Code != "" {
		return fmt.Sprintf("%d %s: %s", code, p.Code, p.Message)
	}
	if len(body) > 200 {
		body = body[:200]
	}
	return fmt.Sprintf("%d %s", code, strings.TrimSpace(string(body)))
}
