// The policy of the `run --jail` tests (cmd/outbound/jail_test.go). Every
// name the tests reach is mapped to a local upstream with --connect-to, so
// enableInternet opens nothing beyond this machine's loopback.
export default {
  enableInternet: true, // raw TCP opens only with the internet on
  interceptHttps: true,
  deniedHosts: ["denied.test"],
  outboundByHost: {
    "api.github.com": (request, env) => {
      const r = new Request(request);
      r.headers.set("Authorization", `Bearer ${env.GITHUB_TOKEN}`);
      return fetch(r);
    },
    "ws.test": (request, env) => {
      const r = new Request(request);
      r.headers.set("X-Injected", env.WS_SECRET);
      return fetch(r);
    },
  },
};
