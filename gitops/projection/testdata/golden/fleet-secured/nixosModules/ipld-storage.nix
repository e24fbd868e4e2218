# The repository's module of role ipld-storage: written by hand, never by cimdeploy.
{ ... }:

{
  # The IPFS swarm port.
  networking.firewall.allowedTCPPorts = [ 4001 ];
}
