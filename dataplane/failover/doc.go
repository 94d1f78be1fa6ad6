// Package failover holds the proof, on real hosts made of network namespaces, that one node
// answers each VIP and that another takes over when it dies, is drained or is cut off. It
// has tests only.
package failover
