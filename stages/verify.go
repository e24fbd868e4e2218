package stages

import (
	"context"
	"errors"

	"github.com/cimdeploy/cimdeploy/gitops/trust"
	"github.com/cimdeploy/cimdeploy/pipeline"
)

// Verify refuses a commit whose signature does not verify against Signers (--trusted-signers). It
// belongs right after checkout in deploy runs: it reads the commit object from the run's workspace.
// Its one step, "signature", notes the signer; a refusal fails it with a *trust.Error saying why.
type Verify struct {
	Signers *trust.Signers
}

// Name implements pipeline.Stage.
func (Verify) Name() string { return "verify" }

// Run implements pipeline.Stage.
func (v Verify) Run(ctx context.Context, s *pipeline.StageRun) error {
	run := s.Run
	if v.Signers == nil {
		return errors.New("no trusted signers")
	}
	if run.Workspace == "" {
		return errors.New("no workspace: the checkout stage did not run")
	}
	return s.Do(ctx, "signature", func(ctx context.Context, st *pipeline.Step) error {
		signer, err := v.Signers.Verify(ctx, run.Workspace, run.Commit)
		if err != nil {
			return err
		}
		st.Note("signed by %s", signer)
		s.Logger.Info("commit signature verified", "commit", run.Commit, "signer", signer.Name, "key", signer.Fingerprint)
		return nil
	})
}
