// Opaque tunnels and policy changes (internal/app tunnels_test.go). The
// test rewrites __DENIED__ and __INTERCEPT__ and reloads to change the
// class under open tunnels.
import { Sandbox } from "@cloudflare/sandbox";

export class Tunnels extends Sandbox {
  enableInternet = true;
  interceptHttps = __INTERCEPT__;
  deniedHosts = [__DENIED__];
}
