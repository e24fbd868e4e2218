// Package webhooks receives GitHub deliveries and turns the ones that ask for work into queue.Jobs.
//
// A Receiver is the http.Handler behind the daemon's webhook URL. For every delivery it caps the
// body, verifies X-Hub-Signature-256 (HMAC-SHA256 with the shared secret, in constant time) before
// reading a byte of it as JSON, decodes only the fields it needs, and then:
//
//   - ping: answers 200 with GitHub's zen;
//   - push to refs/heads/<deploy branch>: enqueues a deploy job;
//   - pull_request opened, synchronize or reopened: enqueues a validate job (of refs/pull/<n>/head);
//   - anything else (other branches, tags, deletions, other actions and events, other repositories):
//     answers 202 and ignores it, saying why in the log, the response body and the metrics.
//
// A job is answered 202 only once the Queue has stored it; a Queue that fails gives 503, so GitHub
// delivers again, and the same X-GitHub-Delivery twice is one job. Nothing the payload says is used
// but the repository's name (compared with the configured one), the ref, the commit ids, the pull
// request's number and the sender's login, each validated; URLs in the payload are never read.
package webhooks
