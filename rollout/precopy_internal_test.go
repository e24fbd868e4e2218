package rollout

import (
	"maps"
	"slices"
	"testing"
)

// TestPrecopyOpeners checks which nodes' closures are copied first, side by side: the first batch with
// a switch of every group that starts at once; a leaves group waits for its hub, so its nodes are no
// openers, and a plan without groups has its first switch as its only opener.
func TestPrecopyOpeners(t *testing.T) {
	t.Parallel()
	nodes := func(actions map[string]Action) []NodePlan {
		var out []NodePlan
		for _, n := range slices.Sorted(maps.Keys(actions)) {
			out = append(out, NodePlan{Node: n, Action: actions[n]})
		}
		return out
	}
	for _, tc := range []struct {
		name string
		plan Plan
		want []string
	}{
		{
			name: "clusters and their leaves",
			plan: Plan{
				Nodes: nodes(map[string]Action{"a-1": ActionSkip, "a-2": ActionSwitch, "b-1": ActionSwitch, "b-2": ActionSwitch,
					"leaf-1": ActionSwitch, "leaf-2": ActionSwitch}),
				Groups: []Group{
					{Name: "cluster a", Batches: [][]string{{"a-1"}, {"a-2"}}},
					{Name: "cluster b", Batches: [][]string{{"b-1"}, {"b-2"}}},
					{Name: "leaves of a", Batches: [][]string{{"leaf-1", "leaf-2"}}, After: []string{"cluster a"}},
				},
			},
			want: []string{"a-2", "b-1"},
		},
		{
			name: "a batch of leaves whose hub does not change",
			plan: Plan{
				Nodes:  nodes(map[string]Action{"leaf-1": ActionSwitch, "leaf-2": ActionSwitch, "leaf-3": ActionSwitch}),
				Groups: []Group{{Name: "leaves of a", Batches: [][]string{{"leaf-1", "leaf-2"}, {"leaf-3"}}}},
			},
			want: []string{"leaf-1", "leaf-2"},
		},
		{
			name: "no groups",
			plan: Plan{Nodes: []NodePlan{{Node: "n-2", Action: ActionSkip}, {Node: "n-3", Action: ActionSwitch}, {Node: "n-1", Action: ActionSwitch}}},
			want: []string{"n-3"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := slices.Sorted(maps.Keys(precopyOpeners(&tc.plan))); !slices.Equal(got, tc.want) {
				t.Errorf("openers %v, want %v", got, tc.want)
			}
		})
	}
}
