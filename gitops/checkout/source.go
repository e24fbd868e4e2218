package checkout

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
)

// tokenUser is the user name GitHub expects with an installation or personal access token.
const tokenUser = "x-access-token"

// Source is a git repository to fetch from and the credentials to fetch it with.
//
// Source formats as its URL alone (String, GoString, LogValue), so logging or printing one never shows
// the token.
type Source struct {
	// URL is a local path, a file:// URL, an https:// (or, for tests on loopback, http://) URL, an
	// ssh:// URL or an scp-like git@host:owner/repo.git. It must not carry credentials.
	URL string
	// Token, for https, is sent as HTTP basic auth with the user x-access-token (what GitHub expects).
	// It never appears in logs or in error messages.
	Token string
	// SSHKeyFile is the private key (OpenSSH or PEM, unencrypted) for ssh URLs; required for them.
	SSHKeyFile string
	// KnownHostsFile pins the ssh host keys; empty means the default files (SSH_KNOWN_HOSTS,
	// ~/.ssh/known_hosts). Host keys are always checked.
	KnownHostsFile string
}

func (s Source) String() string         { return RedactURLs(s.URL) }
func (s Source) GoString() string       { return fmt.Sprintf("checkout.Source{URL: %q}", RedactURLs(s.URL)) }
func (s Source) LogValue() slog.Value   { return slog.StringValue(RedactURLs(s.URL)) }
func (s Source) redact(err error) error { return redact(err, s.Token) }

// urlUserinfo finds the user information of the URLs in a text: scheme://userinfo@.
var urlUserinfo = regexp.MustCompile(`\b([a-zA-Z][a-zA-Z0-9+.-]*)://([^/?#@\s"'<>]*)@`)

// RedactURLs returns s with the credentials of every URL in it replaced by "***": all of the user
// information of an http(s) or other URL (GitHub takes a token as the user name as well as the
// password), the password of an ssh URL (its user name, such as git, is kept). s may be a URL, a
// message or a log line.
func RedactURLs(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	return urlUserinfo.ReplaceAllStringFunc(s, func(m string) string {
		parts := urlUserinfo.FindStringSubmatch(m)
		scheme, info := strings.ToLower(parts[1]), parts[2]
		if scheme == "ssh" || scheme == "git+ssh" || scheme == "ssh+git" {
			user, _, hasPassword := strings.Cut(info, ":")
			if !hasPassword {
				return m
			}
			return parts[1] + "://" + user + ":***@"
		}
		return parts[1] + "://***@"
	})
}

// Validate checks the URL and that the credentials fit its scheme: a token only over https (or http
// to a loopback address), an ssh key only with ssh, and that the key and known_hosts files exist. It
// does not contact the remote.
func (s Source) Validate() error {
	_, err := s.endpoint()
	return err
}

// endpoint is a validated Source.
type endpoint struct {
	url    string // what go-git is given
	scheme string // file, http, https or ssh
	user   string // ssh user
	key    string // the normalised URL the cache is keyed by
}

// cacheKey names the repository's directory in a Cache: a hash of the normalised URL, so no part of
// the raw URL ever becomes a path.
func (e endpoint) cacheKey() string {
	sum := sha256.Sum256([]byte(e.key))
	return hex.EncodeToString(sum[:16])
}

func (s Source) endpoint() (endpoint, error) {
	e, err := s.parseURL()
	if err != nil {
		return endpoint{}, s.redact(fmt.Errorf("checkout: source %q: %w", s.String(), err))
	}
	if err := s.checkCredentials(e); err != nil {
		return endpoint{}, s.redact(fmt.Errorf("checkout: source %q: %w", s.String(), err))
	}
	return e, nil
}

func (s Source) parseURL() (endpoint, error) {
	raw := s.URL
	switch {
	case raw == "":
		return endpoint{}, errors.New("empty URL")
	case strings.HasPrefix(raw, "-"):
		return endpoint{}, errors.New("URL must not begin with '-'")
	case strings.ContainsFunc(raw, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return endpoint{}, errors.New("URL contains a control character")
	}

	if strings.Contains(raw, "://") {
		u, err := url.Parse(raw)
		if err != nil {
			return endpoint{}, fmt.Errorf("parse URL: %w", err)
		}
		switch u.Scheme {
		case "file":
			if u.Host != "" && u.Host != "localhost" {
				return endpoint{}, fmt.Errorf("file URL with host %q", u.Host)
			}
			return localEndpoint(u.Path)
		case "http", "https":
			if u.User != nil {
				return endpoint{}, errors.New("URL must not contain user info: set the token instead")
			}
			if u.Hostname() == "" {
				return endpoint{}, errors.New("URL has no host")
			}
			if u.RawQuery != "" || u.Fragment != "" {
				return endpoint{}, errors.New("URL must not have a query or fragment")
			}
			return endpoint{url: raw, scheme: u.Scheme, key: u.Scheme + "://" + hostKey(u, u.Scheme) + repoPathKey(u.Path)}, nil
		case "ssh":
			if u.Hostname() == "" {
				return endpoint{}, errors.New("URL has no host")
			}
			if _, ok := u.User.Password(); ok {
				return endpoint{}, errors.New("URL must not contain a password")
			}
			user := u.User.Username()
			if user == "" {
				user = "git"
			}
			return endpoint{url: raw, scheme: "ssh", user: user, key: "ssh://" + hostKey(u, "ssh") + repoPathKey(u.Path)}, nil
		default:
			return endpoint{}, fmt.Errorf("unsupported scheme %q (want file, https or ssh)", u.Scheme)
		}
	}

	// scp-like syntax, as git defines it: a ':' before any '/'.
	if colon := strings.IndexByte(raw, ':'); colon > 0 && !strings.Contains(raw[:colon], "/") {
		user, host, ok := strings.Cut(raw[:colon], "@")
		if !ok {
			user, host = "git", raw[:colon]
		}
		if user == "" || host == "" || strings.Contains(host, "@") {
			return endpoint{}, errors.New("malformed scp-like URL (want user@host:path)")
		}
		path := raw[colon+1:]
		if path == "" {
			return endpoint{}, errors.New("scp-like URL has no path")
		}
		key := "ssh://" + strings.ToLower(host) + repoPathKey("/"+strings.TrimPrefix(path, "/"))
		return endpoint{url: raw, scheme: "ssh", user: user, key: key}, nil
	}
	return localEndpoint(raw)
}

// localEndpoint makes a local path absolute and cleans it; symlinks are resolved when the path exists,
// so two spellings of one repository share a cached clone.
func localEndpoint(path string) (endpoint, error) {
	if path == "" {
		return endpoint{}, errors.New("empty path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return endpoint{}, fmt.Errorf("absolute path of %s: %w", path, err)
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	return endpoint{url: abs, scheme: "file", key: "file://" + abs}, nil
}

func hostKey(u *url.URL, scheme string) string {
	host := strings.ToLower(u.Hostname())
	port := u.Port()
	if port == "" || (scheme == "https" && port == "443") || (scheme == "http" && port == "80") || (scheme == "ssh" && port == "22") {
		return host
	}
	return net.JoinHostPort(host, port)
}

// repoPathKey normalises a repository path: "/o/r.git/", "/o/r.git" and "/o/r" are one repository.
func repoPathKey(p string) string {
	p = strings.TrimRight(p, "/")
	p = strings.TrimSuffix(p, ".git")
	return p
}

func (s Source) checkCredentials(e endpoint) error {
	if s.Token != "" {
		switch e.scheme {
		case "https":
		case "http":
			u, _ := url.Parse(e.url)
			if !isLoopback(u.Hostname()) {
				return fmt.Errorf("refusing to send a token over plain http to %s", u.Host)
			}
		default:
			return fmt.Errorf("a token is only used with https URLs, not %s", e.scheme)
		}
	}
	if e.scheme != "ssh" {
		if s.SSHKeyFile != "" || s.KnownHostsFile != "" {
			return fmt.Errorf("ssh key and known_hosts files are only used with ssh URLs, not %s", e.scheme)
		}
		return nil
	}
	if s.SSHKeyFile == "" {
		return errors.New("an ssh URL needs an ssh key file")
	}
	for _, f := range []string{s.SSHKeyFile, s.KnownHostsFile} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			return err
		}
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// auth returns the go-git credentials for e, nil when none are needed.
func (s Source) auth(e endpoint) (transport.AuthMethod, error) {
	switch {
	case e.scheme == "ssh":
		keys, err := gitssh.NewPublicKeysFromFile(e.user, s.SSHKeyFile, "")
		if err != nil {
			return nil, fmt.Errorf("checkout: ssh key %s: %w", s.SSHKeyFile, err)
		}
		if s.KnownHostsFile != "" {
			cb, err := gitssh.NewKnownHostsCallback(s.KnownHostsFile)
			if err != nil {
				return nil, fmt.Errorf("checkout: known hosts %s: %w", s.KnownHostsFile, err)
			}
			keys.HostKeyCallback = cb
		}
		return keys, nil
	case s.Token != "":
		return &githttp.BasicAuth{Username: tokenUser, Password: s.Token}, nil
	}
	return nil, nil
}

// redactedError replaces a secret in an error's message; errors.Is and errors.As still see the
// original chain.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// redact replaces secret and the credentials of URLs (RedactURLs) in err's message; go-git errors may
// echo a URL.
func redact(err error, secret string) error {
	if err == nil {
		return nil
	}
	msg := RedactURLs(err.Error())
	if secret != "" {
		msg = strings.ReplaceAll(msg, secret, "***")
	}
	if msg == err.Error() {
		return err
	}
	return &redactedError{msg: msg, err: err}
}
