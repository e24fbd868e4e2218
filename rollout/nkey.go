package rollout

import (
	"fmt"
	"io"
	"os"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// maxNkeyFile bounds the read of an nkey seed file (a seed is 58 bytes; a decorated one a few lines).
const maxNkeyFile = 4 << 10

// checkNkeyFile checks that path holds a user nkey seed. Its errors never quote the file.
func checkNkeyFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxNkeyFile+1))
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > maxNkeyFile {
		return fmt.Errorf("%s: longer than %d bytes: not an nkey seed file", path, maxNkeyFile)
	}
	kp, err := nkeys.ParseDecoratedNKey(data)
	if err != nil {
		return fmt.Errorf("%s: no nkey seed in it", path)
	}
	defer kp.Wipe()
	pub, err := kp.PublicKey()
	if err != nil || !nkeys.IsValidPublicUserKey(pub) {
		return fmt.Errorf("%s: not a user's nkey seed (it must start with SU)", path)
	}
	return nil
}

// authOptions are the client options that authenticate as the configured system account user, over
// TLS when the servers require it of clients (CAFile).
func (n *NATS) authOptions() ([]nats.Option, error) {
	if n.CAFile != "" {
		auth, err := n.userOptions()
		return append(auth, nats.RootCAs(n.CAFile)), err // TLS, the servers verified against the CA
	}
	return n.userOptions()
}

func (n *NATS) userOptions() ([]nats.Option, error) {
	switch {
	case n.NkeyFile != "":
		opt, err := nats.NkeyOptionFromSeed(n.NkeyFile)
		if err != nil {
			return nil, fmt.Errorf("system account nkey %s: %w", n.NkeyFile, err)
		}
		return []nats.Option{opt}, nil
	case n.CredsFile != "":
		return []nats.Option{nats.UserCredentials(n.CredsFile)}, nil
	case n.User != "":
		return []nats.Option{nats.UserInfo(n.User, n.Password)}, nil
	}
	return nil, nil
}

// authenticates reports whether a system account user is configured.
func (n *NATS) authenticates() bool { return n.NkeyFile != "" || n.CredsFile != "" || n.User != "" }
