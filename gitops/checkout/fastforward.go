package checkout

import (
	"context"
	"fmt"
)

// Ancestry answers whether a commit descends from another; *Cache implements it.
type Ancestry interface {
	IsAncestor(ctx context.Context, src Source, ancestor, descendant string) (bool, error)
}

// ForcePushError reports a deploy branch whose new head does not descend from the last deployed
// commit: its history was rewritten (a force push), so deploying it would silently drop what was
// deployed.
type ForcePushError struct {
	Last string // the last deployed commit
	New  string // the branch's new head
}

func (e *ForcePushError) Error() string {
	return fmt.Sprintf("checkout: force push: new head %s does not descend from the last deployed commit %s; "+
		"refusing to deploy it (allow force pushes in the configuration to deploy it anyway)", e.New, e.Last)
}

// CheckFastForward is the force-push policy. It returns forced=false, nil when newHead descends from
// lastDeployed, or when nothing was deployed yet (lastDeployed == ""). Otherwise forced is true and
// the error is a *ForcePushError, unless allowForce is set: then the error is nil and the caller
// should log that it deploys a force push. Errors reading the history are returned as they are.
func CheckFastForward(ctx context.Context, a Ancestry, src Source, lastDeployed, newHead string, allowForce bool) (forced bool, err error) {
	if lastDeployed == "" {
		return false, nil
	}
	ok, err := a.IsAncestor(ctx, src, lastDeployed, newHead)
	switch {
	case err != nil:
		return false, err
	case ok:
		return false, nil
	case allowForce:
		return true, nil
	}
	return true, &ForcePushError{Last: lastDeployed, New: newHead}
}
