# services.cimdeploy: `cimdeploy serve`, the webhook daemon, as a hardened systemd service.
#
# Every setting is an option that becomes the CIMDEPLOY_* variable `cimdeploy serve --help` names; the
# rest go through extraEnvironment. Secrets never enter the Nix store: each *File option is a path on
# the host, handed to the service with LoadCredential and read by cimdeploy from
# $CREDENTIALS_DIRECTORY (the CIMDEPLOY_*_FILE variables name %d/<credential>).
#
# The service runs as the static system user `cimdeploy` (not DynamicUser): the state directory holds
# the embedded NATS JetStream store, cached clones and run workspaces that outlive a restart and that an
# operator reads with the same account while serve is stopped (`sudo -u cimdeploy cimdeploy runs
# --data-dir /var/lib/cimdeploy`); a fixed name is what nix.settings.allowed-users and audit logs can
# name; and files keep one owner instead of a recursive chown at every start.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkIf mkOption types;
  cfg = config.services.cimdeploy;

  stateDir = "/var/lib/cimdeploy";

  # An absolute path given as a string, so that a secret is not copied into the world-readable store.
  secretPath = types.nullOr (types.strMatching "/.+");

  # host:port, [v6]:port or :port; the port is what openFirewall opens.
  listenMatch = builtins.match "(.*):(0|[1-9][0-9]{0,4})" cfg.listen;
  listenPort = if listenMatch == null then null else builtins.fromJSON (builtins.elemAt listenMatch 1);
  listenHost = if listenMatch == null then "" else builtins.elemAt listenMatch 0;
  loopback = builtins.elem listenHost [ "localhost" "[::1]" ] || lib.hasPrefix "127." listenHost;
  # A port below 1024 needs the one capability the service may then keep.
  privilegedPort = listenPort != null && listenPort > 0 && listenPort < 1024;

  # Credential name -> (file on the host, variable cimdeploy reads the file's path from).
  secrets = lib.filterAttrs (_: s: s.file != null) {
    webhook-secret = { file = cfg.webhookSecretFile; variable = "CIMDEPLOY_GITHUB_WEBHOOK_SECRET_FILE"; };
    github-token = { file = cfg.githubTokenFile; variable = "CIMDEPLOY_GITHUB_TOKEN_FILE"; };
    github-app-key = { file = cfg.githubApp.privateKeyFile; variable = "CIMDEPLOY_GITHUB_APP_PRIVATE_KEY_FILE"; };
    ssh-key = { file = cfg.ssh.keyFile; variable = "CIMDEPLOY_SSH_KEY_FILE"; };
    ssh-key-passphrase = { file = cfg.ssh.keyPassphraseFile; variable = "CIMDEPLOY_SSH_KEY_PASSPHRASE_FILE"; };
    git-token = { file = cfg.git.tokenFile; variable = "CIMDEPLOY_GIT_TOKEN_FILE"; };
    git-ssh-key = { file = cfg.git.sshKeyFile; variable = "CIMDEPLOY_GIT_SSH_KEY_FILE"; };
    nats-creds = { file = cfg.natsCredsFile; variable = "CIMDEPLOY_NATS_CREDS_FILE"; };
    nats-system-creds = { file = cfg.natsSystemCredsFile; variable = "CIMDEPLOY_ROLLOUT_SYSTEM_CREDS_FILE"; };
  };

  optionalVar = name: value: lib.optionalAttrs (value != null) { ${name} = toString value; };

  environment =
    {
      CIMDEPLOY_DATA_DIR = stateDir;
      CIMDEPLOY_LISTEN = cfg.listen;
      CIMDEPLOY_REPO = cfg.repo;
      CIMDEPLOY_GITHUB_REPOSITORY = cfg.githubRepository;
      CIMDEPLOY_DEPLOY_BRANCH = cfg.deployBranch;
      CIMDEPLOY_GITHUB_API_URL = cfg.githubApiUrl;
      CIMDEPLOY_GITHUB_ENVIRONMENT = cfg.githubEnvironment;
      CIMDEPLOY_REQUIRE_APPROVAL = lib.boolToString cfg.requireApproval;
      CIMDEPLOY_LXC_BUILDER = cfg.lxcBuilder;
      CIMDEPLOY_CLOSURE_COPY = cfg.closureCopy;
      CIMDEPLOY_SSH_USER = cfg.ssh.user;
      CIMDEPLOY_SSH_PORT = toString cfg.ssh.port;
      CIMDEPLOY_PROXMOX_STORAGE = cfg.proxmoxStorage;
      CIMDEPLOY_NIX_BIN = "${cfg.nixPackage}/bin/nix";
      # nix keeps its caches under $HOME; the service's home is its state directory.
      HOME = stateDir;
    }
    // optionalVar "CIMDEPLOY_PUBLIC_URL" cfg.publicUrl
    // optionalVar "CIMDEPLOY_TRUSTED_SIGNERS" cfg.trustedSigners
    // optionalVar "CIMDEPLOY_NATS_URL" cfg.natsUrl
    // optionalVar "CIMDEPLOY_NATS_LISTEN" cfg.natsListen
    // optionalVar "CIMDEPLOY_SSH_KNOWN_HOSTS" cfg.ssh.knownHosts
    // optionalVar "CIMDEPLOY_SSH_JUMP" cfg.ssh.jump
    // optionalVar "CIMDEPLOY_GIT_KNOWN_HOSTS" cfg.git.knownHosts
    // optionalVar "CIMDEPLOY_PROXMOX_HOST" cfg.proxmoxHost
    // optionalVar "CIMDEPLOY_GITHUB_APP_ID" cfg.githubApp.id
    // optionalVar "CIMDEPLOY_GITHUB_APP_INSTALLATION_ID" cfg.githubApp.installationId
    // optionalVar "CIMDEPLOY_LOG_LEVEL" cfg.logLevel
    // lib.mapAttrs' (name: s: lib.nameValuePair s.variable "%d/${name}") secrets
    // cfg.extraEnvironment;

  secretOption = what: mkOption {
    type = secretPath;
    default = null;
    description = ''
      File on the host holding ${what}. Passed to the service with LoadCredential (so it may be readable by
      root only) and never copied into the Nix store: give it as a string.
    '';
  };
in
{
  options.services.cimdeploy = {
    enable = lib.mkEnableOption "cimdeploy serve, the webhook daemon that deploys the infrastructure repository";

    package = mkOption {
      type = types.package;
      default = pkgs.cimdeploy;
      defaultText = lib.literalExpression "pkgs.cimdeploy";
      description = "The cimdeploy package (the flake's nixosModules.default sets it to the flake's own).";
    };

    nixPackage = mkOption {
      type = types.package;
      default = config.nix.package;
      defaultText = lib.literalExpression "config.nix.package";
      description = "The Nix cimdeploy runs (CIMDEPLOY_NIX_BIN); by default the system's, which matches its daemon.";
    };

    listen = mkOption {
      type = types.str;
      default = "127.0.0.1:8420";
      description = "host:port for webhooks, run pages, health and metrics (CIMDEPLOY_LISTEN).";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the port of `listen` in the firewall (usually a TLS reverse proxy fronts serve instead).";
    };

    repo = mkOption {
      type = types.str;
      description = "The infrastructure repository: a URL (https, ssh, file) or a local path (CIMDEPLOY_REPO).";
    };

    githubRepository = mkOption {
      type = types.str;
      description = "OWNER/NAME: deliveries for any other repository are ignored (CIMDEPLOY_GITHUB_REPOSITORY).";
    };

    deployBranch = mkOption {
      type = types.str;
      default = "main";
      description = "The branch whose pushes deploy (CIMDEPLOY_DEPLOY_BRANCH).";
    };

    publicUrl = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "Where serve is reached: statuses link to its run pages (CIMDEPLOY_PUBLIC_URL).";
    };

    githubApiUrl = mkOption {
      type = types.str;
      default = "https://api.github.com/";
      description = "GitHub's REST API; Enterprise Server: https://HOST/api/v3/ (CIMDEPLOY_GITHUB_API_URL).";
    };

    githubEnvironment = mkOption {
      type = types.str;
      default = "production";
      description = "The GitHub deployments' environment (CIMDEPLOY_GITHUB_ENVIRONMENT).";
    };

    webhookSecretFile = secretOption "the webhook's shared secret (CIMDEPLOY_GITHUB_WEBHOOK_SECRET_FILE, required)";

    githubTokenFile = secretOption "a token for commit statuses and deployments (CIMDEPLOY_GITHUB_TOKEN_FILE)";

    githubApp = {
      id = mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
        description = "GitHub App id (CIMDEPLOY_GITHUB_APP_ID), instead of a token.";
      };
      installationId = mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
        description = "The App's installation id (CIMDEPLOY_GITHUB_APP_INSTALLATION_ID).";
      };
      privateKeyFile = secretOption "the GitHub App's private key, PEM (CIMDEPLOY_GITHUB_APP_PRIVATE_KEY_FILE)";
    };

    trustedSigners = mkOption {
      type = types.nullOr types.path;
      default = null;
      description = "SSH allowed signers and/or OpenPGP public keys: a deploy refuses a commit they did not sign (CIMDEPLOY_TRUSTED_SIGNERS).";
    };

    requireApproval = mkOption {
      type = types.bool;
      default = false;
      description = "Hold deploys after build and publish until `cimdeploy approve RUN` (CIMDEPLOY_REQUIRE_APPROVAL).";
    };

    lxcBuilder = mkOption {
      type = types.enum [ "nixpkgs" "nixos-generators" ];
      default = "nixpkgs";
      description = "What builds the Proxmox LXC templates (CIMDEPLOY_LXC_BUILDER).";
    };

    closureCopy = mkOption {
      type = types.enum [ "export" "nix-copy" ];
      default = "export";
      description = "How closures reach the nodes: over cimdeploy's own SSH connection, or `nix copy --to ssh-ng://`, which runs OpenSSH (CIMDEPLOY_CLOSURE_COPY).";
    };

    natsUrl = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "External NATS cluster (JetStream) instead of the embedded server (CIMDEPLOY_NATS_URL).";
    };

    natsCredsFile = secretOption "the NATS credentials for natsUrl (CIMDEPLOY_NATS_CREDS_FILE)";

    natsSystemCredsFile = secretOption "the NATS system account's credentials: the health gate also pings every server (CIMDEPLOY_ROLLOUT_SYSTEM_CREDS_FILE)";

    natsListen = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "127.0.0.1:4250";
      description = "host:port where the embedded NATS accepts `cimdeploy pause`, `approve`, ... (CIMDEPLOY_NATS_LISTEN). No authentication: keep it on loopback.";
    };

    ssh = {
      user = mkOption {
        type = types.str;
        default = "root";
        description = "Login user on the nodes and the Proxmox host (CIMDEPLOY_SSH_USER).";
      };
      port = mkOption {
        type = types.port;
        default = 22;
        description = "SSH port of hosts whose address names none (CIMDEPLOY_SSH_PORT).";
      };
      keyFile = secretOption "the private key cimdeploy logs in to the nodes with (CIMDEPLOY_SSH_KEY_FILE)";
      keyPassphraseFile = secretOption "the passphrase of keyFile (CIMDEPLOY_SSH_KEY_PASSPHRASE_FILE)";
      knownHosts = mkOption {
        type = types.nullOr types.path;
        default = null;
        description = "known_hosts of the nodes and the Proxmox host; hosts not in it are refused (CIMDEPLOY_SSH_KNOWN_HOSTS).";
      };
      jump = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "[user@]host[:port] to reach the nodes through (CIMDEPLOY_SSH_JUMP).";
      };
    };

    git = {
      tokenFile = secretOption "an HTTPS token for the repository (CIMDEPLOY_GIT_TOKEN_FILE)";
      sshKeyFile = secretOption "an SSH key for an ssh:// repository (CIMDEPLOY_GIT_SSH_KEY_FILE)";
      knownHosts = mkOption {
        type = types.nullOr types.path;
        default = null;
        description = "known_hosts for an ssh:// repository (CIMDEPLOY_GIT_KNOWN_HOSTS).";
      };
    };

    proxmoxHost = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "The Proxmox host: templates and new containers (CIMDEPLOY_PROXMOX_HOST).";
    };

    proxmoxStorage = mkOption {
      type = types.str;
      default = "local";
      description = "Proxmox storage templates are uploaded to (CIMDEPLOY_PROXMOX_STORAGE).";
    };

    logLevel = mkOption {
      type = types.nullOr (types.enum [ "debug" "info" "warn" "error" ]);
      default = null;
      description = "CIMDEPLOY_LOG_LEVEL; unset, serve logs at info.";
    };

    extraEnvironment = mkOption {
      type = types.attrsOf types.str;
      default = { };
      example = { CIMDEPLOY_TIMEOUT_ROLLOUT = "3h"; CIMDEPLOY_NIX_OFFLINE = "true"; };
      description = "More CIMDEPLOY_* variables (see `cimdeploy serve --help`); they win over the options above.";
    };

    user = mkOption {
      type = types.str;
      default = "cimdeploy";
      description = "User the service runs as; the module creates `cimdeploy`, another name must exist.";
    };

    group = mkOption {
      type = types.str;
      default = "cimdeploy";
      description = "Group the service runs as; the module creates `cimdeploy`.";
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = listenPort != null && listenPort <= 65535;
        message = "services.cimdeploy.listen `${cfg.listen}' must be host:port with a port number (CIMDEPLOY_LISTEN).";
      }
      {
        assertion = builtins.match "[^/]+/[^/]+" cfg.githubRepository != null;
        message = "services.cimdeploy.githubRepository `${cfg.githubRepository}' must be OWNER/NAME (CIMDEPLOY_GITHUB_REPOSITORY).";
      }
      {
        assertion = cfg.repo != "";
        message = "services.cimdeploy.repo is empty: name the infrastructure repository's URL (CIMDEPLOY_REPO).";
      }
      {
        assertion = cfg.webhookSecretFile != null;
        message = "services.cimdeploy.webhookSecretFile is required: serve accepts only signed deliveries (CIMDEPLOY_GITHUB_WEBHOOK_SECRET_FILE).";
      }
      {
        assertion = cfg.githubTokenFile == null || (cfg.githubApp.id == null && cfg.githubApp.installationId == null && cfg.githubApp.privateKeyFile == null);
        message = "services.cimdeploy: set githubTokenFile or githubApp, not both (CIMDEPLOY_GITHUB_TOKEN_FILE and CIMDEPLOY_GITHUB_APP_*).";
      }
      {
        assertion =
          let app = cfg.githubApp;
          in (app.id == null && app.installationId == null && app.privateKeyFile == null)
            || (app.id != null && app.installationId != null && app.privateKeyFile != null);
        message = "services.cimdeploy.githubApp needs id, installationId and privateKeyFile together (CIMDEPLOY_GITHUB_APP_ID, CIMDEPLOY_GITHUB_APP_INSTALLATION_ID, CIMDEPLOY_GITHUB_APP_PRIVATE_KEY_FILE).";
      }
      {
        assertion = cfg.natsCredsFile == null || cfg.natsUrl != null;
        message = "services.cimdeploy.natsCredsFile is for an external NATS: set natsUrl too (CIMDEPLOY_NATS_URL).";
      }
    ];

    warnings =
      lib.optional (cfg.githubTokenFile == null && cfg.githubApp.id == null)
        "services.cimdeploy: neither githubTokenFile nor githubApp is set: runs are not reported to GitHub (no commit statuses, no deployments)."
      ++ lib.optional (cfg.openFirewall && loopback)
        "services.cimdeploy.openFirewall opens port ${toString listenPort}, but listen `${cfg.listen}' is a loopback address.";

    users.users = lib.optionalAttrs (cfg.user == "cimdeploy") {
      cimdeploy = {
        isSystemUser = true;
        group = cfg.group;
        home = stateDir;
        description = "cimdeploy serve";
      };
    };
    users.groups = lib.optionalAttrs (cfg.group == "cimdeploy") { cimdeploy = { }; };

    networking.firewall.allowedTCPPorts = lib.optional (cfg.openFirewall && listenPort != null) listenPort;

    systemd.services.cimdeploy = {
      description = "cimdeploy serve: GitHub webhooks deploy the infrastructure repository";
      wantedBy = [ "multi-user.target" ];
      after = [ "network-online.target" "nix-daemon.socket" ];
      wants = [ "network-online.target" ];
      # nix evaluates the infrastructure flake, whose workspace is a git+file: reference; nix copy
      # reaches ssh-ng:// stores with OpenSSH's ssh.
      path = [ cfg.nixPackage pkgs.git ] ++ lib.optional (cfg.closureCopy == "nix-copy") pkgs.openssh;
      inherit environment;
      serviceConfig = {
        Type = "exec";
        ExecStart = "${cfg.package}/bin/cimdeploy serve";
        User = cfg.user;
        Group = cfg.group;
        # SIGTERM cancels a run between nodes and puts its job back on the queue; give the node in
        # flight its activation time, then the shutdown's.
        KillSignal = "SIGTERM";
        TimeoutStopSec = "3min";
        Restart = "on-failure";
        RestartSec = "5s";

        StateDirectory = "cimdeploy";
        StateDirectoryMode = "0700";
        WorkingDirectory = stateDir;
        UMask = "0077";
        LoadCredential = lib.mapAttrsToList (name: s: "${name}:${s.file}") secrets;

        # Hardening: serve needs the network (GitHub, the nodes, NATS), the nix daemon's socket and its
        # state directory; nothing else.
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        NoNewPrivileges = true;
        CapabilityBoundingSet = if privilegedPort then [ "CAP_NET_BIND_SERVICE" ] else "";
        AmbientCapabilities = if privilegedPort then [ "CAP_NET_BIND_SERVICE" ] else "";
        RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        ProtectClock = true;
        ProtectControlGroups = true;
        ProtectHostname = true;
        ProtectKernelLogs = true;
        ProtectKernelModules = true;
        ProtectKernelTunables = true;
        # Not ProcSubset=pid: the build stage bounds its workers by /proc/meminfo.
        ProtectProc = "invisible";
        RemoveIPC = true;
        SystemCallArchitectures = "native";
        # Not ~@resources: nix raises its stack limit with setrlimit.
        SystemCallFilter = [ "@system-service" "~@privileged" ];
        SystemCallErrorNumber = "EPERM";
      };
    };
  };
}
