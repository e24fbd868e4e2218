package deploy

import "github.com/cimdeploy/cimdeploy/pipeline/store"

// Store is the state store the Cluster reads and records in: the node records and the run history
// (the fleet's observation reads both). It is closed with the Cluster when OpenCluster opened it.
func (c *Cluster) Store() *store.Store { return c.store }
