package servers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// RegisterUsers creates the accounts users@srv.Domain(), all with the same
// password (or sets it on those that exist), as fast as the server allows:
// for load tests that need thousands of accounts.
//
// On Prosody, prosodyctl costs a Lua start per account (about half a
// second), so only the first account is registered with it; the others get
// a copy of its account file. That is sound because Prosody's
// internal_hashed account file holds only the SCRAM salt, iteration count
// and keys derived from the password, nothing of the name, and Prosody
// reads it at each login. On ejabberd, the HTTP API is called for each
// account, a few at a time.
func RegisterUsers(ctx context.Context, srv XMPPServer, users []string, password string) error {
	if len(users) == 0 {
		return nil
	}
	if p, ok := srv.(*Prosody); ok {
		return p.registerUsers(ctx, users, password)
	}
	const workers = 8
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	next := make(chan string)
	for range workers {
		wg.Go(func() {
			for u := range next {
				if err := srv.RegisterUser(ctx, u, password); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		})
	}
	for _, u := range users {
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed || ctx.Err() != nil {
			break
		}
		next <- u
	}
	close(next)
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return firstErr
}

// registerUsers registers users[0] with prosodyctl and copies its account
// file for the others.
func (p *Prosody) registerUsers(ctx context.Context, users []string, password string) error {
	if err := p.RegisterUser(ctx, users[0], password); err != nil {
		return err
	}
	accounts := filepath.Join(p.dir, "data", prosodyEncode(p.domain), "accounts")
	src := filepath.Join(accounts, prosodyEncode(strings.ToLower(users[0]))+".dat")
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("prosody: bulk register: %w", err)
	}
	fi, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("prosody: bulk register: %w", err)
	}
	for _, u := range users[1:] {
		if err := ctx.Err(); err != nil {
			return err
		}
		dst := filepath.Join(accounts, prosodyEncode(strings.ToLower(u))+".dat")
		if err := os.WriteFile(dst, b, fi.Mode().Perm()); err != nil {
			return fmt.Errorf("prosody: bulk register %s: %w", u, err)
		}
		if p.user.cred != nil {
			if err := os.Chown(dst, int(p.user.cred.Uid), int(p.user.cred.Gid)); err != nil {
				return fmt.Errorf("prosody: bulk register %s: %w", u, err)
			}
		}
	}
	return nil
}

// prosodyEncode encodes a name the way Prosody's file storage names files
// and directories (util.datamanager): every byte but ASCII letters and
// digits becomes %XX, lower-case hex.
func prosodyEncode(s string) string {
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			sb.WriteByte(c)
			continue
		}
		fmt.Fprintf(&sb, "%%%02x", c)
	}
	return sb.String()
}
