package deploy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/cimdeploy/cimdeploy/remote"
)

// dryRunProxmox is a Proxmox host that is looked at, never changed: UploadTemplate names the template
// an upload would make (its sha256 computed here) without sending it, EnsureContainer refuses. The
// plan of a dry run still shows which template a new node would be created from.
type dryRunProxmox struct {
	remote.Proxmox
	storage string
}

func (d dryRunProxmox) UploadTemplate(ctx context.Context, t remote.Template) (remote.Uploaded, error) {
	f, err := os.Open(t.File)
	if err != nil {
		return remote.Uploaded{}, err
	}
	defer f.Close()
	h := sha256.New()
	size, err := io.Copy(h, f)
	if err != nil {
		return remote.Uploaded{}, err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	name := remote.TemplateName(t.Node, sum)
	return remote.Uploaded{Name: name, Volume: d.storage + ":vztmpl/" + name, SHA256: sum, Size: size, Skipped: true}, nil
}

var errDryRun = errors.New("dry run: nothing is changed")

func (d dryRunProxmox) EnsureContainer(context.Context, remote.Container) (remote.Ensured, error) {
	return remote.Ensured{}, fmt.Errorf("ensure container: %w", errDryRun)
}
