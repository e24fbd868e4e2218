# A typical services.cimdeploy: a GitHub App, an SSH deploy key, a Proxmox host, approval required.
# flake.nix's checks.<system>.module builds a NixOS container with it; nix/module_test.go evaluates it
# against the lab's stand-in for nixpkgs and checks the unit it makes.
{
  boot.isContainer = true;
  system.stateVersion = "25.11";
  networking.hostName = "deploy";

  services.cimdeploy = {
    enable = true;
    listen = "0.0.0.0:8420";
    openFirewall = true;
    repo = "https://github.com/acme/infra.git";
    githubRepository = "acme/infra";
    deployBranch = "production";
    publicUrl = "https://cimdeploy.example.com";
    githubApiUrl = "https://github.example.com/api/v3/";
    webhookSecretFile = "/run/keys/cimdeploy/webhook-secret";
    githubApp = {
      id = 4242;
      installationId = 77;
      privateKeyFile = "/run/keys/cimdeploy/github-app.pem";
    };
    trustedSigners = "/etc/cimdeploy/allowed_signers";
    requireApproval = true;
    natsUrl = "nats://nats-1.example.com:4222";
    natsCredsFile = "/run/keys/cimdeploy/nats.creds";
    ssh = {
      user = "deploy";
      port = 2222;
      keyFile = "/run/keys/cimdeploy/ssh-key";
      knownHosts = "/etc/cimdeploy/known_hosts";
      jump = "bastion.example.com";
    };
    proxmoxHost = "pve1.example.com";
    extraEnvironment.CIMDEPLOY_TIMEOUT_ROLLOUT = "3h";
  };
}
