// Classes for the attack corpus (proxy/server/attack_*_test.go). Each class
// is one policy shape an attacker tries to get around.
import { Sandbox } from "@cloudflare/sandbox";

// Only allowed.test (and its subdomains) leave; the internet is off.
export class Allow extends Sandbox {
  enableInternet = false;
  interceptHttps = true;
  allowedHosts = ["allowed.test", "*.allowed.test"];
}

// An open internet with one denied host.
export class Deny extends Sandbox {
  enableInternet = true;
  interceptHttps = true;
  deniedHosts = ["evil.test"];
}

// Everything is forwarded, subject only to the private-network guard.
export class Open extends Sandbox {
  enableInternet = true;
  interceptHttps = true;
}

// CONNECT is not intercepted: raw tunnels, decided on the CONNECT host only.
export class Raw extends Sandbox {
  enableInternet = false;
  interceptHttps = false;
  allowedHosts = ["allowed.test"];
}

// Every request goes through a handler that fetches it (fetch follows
// redirects, and each hop must pass the private-network guard).
export class Fetcher extends Sandbox {
  enableInternet = false;
  interceptHttps = true;
}
Fetcher.outbound = (request) => fetch(request);
