package rollout

import (
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/cimdeploy/cimdeploy/gitops/topology"
)

// maxCAFile bounds the read of a CA file (a few certificates in PEM).
const maxCAFile = 1 << 20

// clientCA is the CA file the gate verifies the NATS servers with when their clients must use TLS:
// CIMDEPLOY_ROLLOUT_NATS_CA_FILE, or the CA of the secrets directory (what the nodes' certificates are
// signed by: the first node's ca.pem). It must hold at least one certificate.
func clientCA(top *topology.Topology, cfg Config) (string, error) {
	path, from := cfg.NATSCAFile, "CIMDEPLOY_ROLLOUT_NATS_CA_FILE"
	if path == "" && cfg.SecretsDir != "" {
		for _, name := range top.NodeNames() {
			if r := top.Nodes[name].Role; r == "" || topology.RunsNATS(r) {
				path, from = filepath.Join(cfg.SecretsDir, name, topology.SecretCA), "CIMDEPLOY_SECRETS_DIR"
				break
			}
		}
	}
	if path == "" {
		return "", fmt.Errorf("%w: the topology requires TLS of NATS clients (ClusterSecured client_tls), so the gate connects with TLS: "+
			"give the servers' CA (CIMDEPLOY_ROLLOUT_NATS_CA_FILE, or the secrets directory CIMDEPLOY_SECRETS_DIR that holds it)", ErrNoNATSAccess)
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("NATS servers' CA (%s): %w", from, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxCAFile+1))
	switch {
	case err != nil:
		return "", fmt.Errorf("NATS servers' CA %s: %w", path, err)
	case len(data) > maxCAFile:
		return "", fmt.Errorf("NATS servers' CA %s: longer than %d bytes", path, maxCAFile)
	case !x509.NewCertPool().AppendCertsFromPEM(data):
		return "", fmt.Errorf("NATS servers' CA %s (%s): no PEM certificate in it", path, from)
	}
	return path, nil
}
