package xmppaccounts

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/devices"
)

// EjabberdConfig says how to reach ejabberd's HTTP API.
type EjabberdConfig struct {
	// URL is the API's base URL, e.g. http://127.0.0.1:5280/api; the
	// command's name is appended.
	URL string
	// User and Password, when User is set, authenticate with HTTP basic
	// auth as an ejabberd account (user@host) that api_permissions allows
	// the register and unregister commands.
	User, Password string
	// Token, when set, is sent as a bearer token (an OAuth token issued
	// by ejabberd with the ejabberd:admin scope).
	Token string
	// Timeout bounds one call; default DefaultTimeout.
	Timeout time.Duration
	// Client makes the calls; nil: a client of its own.
	Client *http.Client
}

// Ejabberd creates and removes accounts through ejabberd's mod_http_api
// (commands register and unregister).
type Ejabberd struct {
	cfg EjabberdConfig
}

var _ devices.AccountProvisioner = (*Ejabberd)(nil)

// NewEjabberd returns an Ejabberd for cfg.
func NewEjabberd(cfg EjabberdConfig) *Ejabberd {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Client == nil {
		// No redirects: the credential must go only where configured.
		cfg.Client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	cfg.URL = strings.TrimRight(cfg.URL, "/")
	return &Ejabberd{cfg: cfg}
}

// ejabberdErrAlreadyRegistered is mod_http_api's error code for register
// on an existing account.
const ejabberdErrAlreadyRegistered = 10090

// maxAnswer bounds what is read of an answer of the API.
const maxAnswer = 64 << 10

// ejabberdError is an error answer of mod_http_api.
type ejabberdError struct {
	Status  string `json:"status"`
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (e *ejabberdError) Error() string {
	return fmt.Sprintf("ejabberd API error %d: %s", e.Code, e.Message)
}

// CreateAccount calls register. Errors: as devices.AccountProvisioner
// says.
func (e *Ejabberd) CreateAccount(ctx context.Context, jid, password string) error {
	user, host, err := split(jid)
	if err != nil {
		return err
	}
	err = e.call(ctx, "register", map[string]string{"user": user, "host": host, "password": password})
	var apiErr *ejabberdError
	if errors.As(err, &apiErr) && apiErr.Code == ejabberdErrAlreadyRegistered {
		return &iotgate.Error{Code: iotgate.EConflict, Detail: devices.DetailAccountExists,
			Message: fmt.Sprintf("the XMPP account %s already exists", jid), Err: err}
	}
	if apiErr != nil {
		// The server refused for a reason of its own (a host it does
		// not serve, a name it won't take).
		return &iotgate.Error{Code: iotgate.EUnprocessable, Detail: "account_refused",
			Message: fmt.Sprintf("the XMPP server refused to create %s: %s", jid, apiErr.Message), Err: err}
	}
	return err
}

// DeleteAccount calls unregister. Errors: as devices.AccountProvisioner
// says.
func (e *Ejabberd) DeleteAccount(ctx context.Context, jid string) error {
	user, host, err := split(jid)
	if err != nil {
		return err
	}
	err = e.call(ctx, "unregister", map[string]string{"user": user, "host": host})
	var apiErr *ejabberdError
	if errors.As(err, &apiErr) {
		return unavailable("the XMPP server refused to remove the account", err)
	}
	return err
}

// call calls command with args. An error answer of the API is an
// *ejabberdError; any other failure is unavailable.
func (e *Ejabberd) call(ctx context.Context, command string, args any) error {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.Timeout)
	defer cancel()
	body, err := json.Marshal(args)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.cfg.URL+"/"+command, bytes.NewReader(body))
	if err != nil {
		return unavailable("the XMPP server's API URL is not usable", err)
	}
	req.Header.Set("Content-Type", "application/json")
	switch {
	case e.cfg.Token != "":
		req.Header.Set("Authorization", "Bearer "+e.cfg.Token)
	case e.cfg.User != "":
		req.SetBasicAuth(e.cfg.User, e.cfg.Password)
	}
	resp, err := e.cfg.Client.Do(req)
	if err != nil {
		// The error names the URL, never the body (the password).
		return unavailable("the XMPP server's API can't be reached", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return unavailable("the XMPP server's API answer was cut", err)
	}
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		return unavailable("the XMPP server's API refused iotgate's credential",
			fmt.Errorf("%s: HTTP %d: %s", command, resp.StatusCode, bytes.TrimSpace(b)))
	}
	apiErr := &ejabberdError{}
	if json.Unmarshal(b, apiErr) == nil && apiErr.Status == "error" {
		return apiErr
	}
	return unavailable("the XMPP server's API failed", fmt.Errorf("%s: HTTP %d: %s", command, resp.StatusCode, bytes.TrimSpace(b)))
}
