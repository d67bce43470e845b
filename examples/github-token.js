// Credential injection over HTTPS: the sandbox calls GitHub with no token,
// and the proxy adds one it never sees.
//
//   outbound run --script examples/github-token.js --var GITHUB_TOKEN=ghp_... \
//     -- curl -s https://api.github.com/user
export default {
  interceptHttps: true, // decrypt CONNECT to 443 so the handler sees the request
  enableInternet: false, // nothing else leaves
  allowedHosts: ["github.com", "api.github.com"],
  outboundByHost: {
    "api.github.com": withToken,
    "github.com": withToken,
  },
};

function withToken(request, env) {
  if (!env.GITHUB_TOKEN) {
    return new Response("outbound: GITHUB_TOKEN is not set on the proxy\n", { status: 503 });
  }
  const r = new Request(request);
  r.headers.set("Authorization", `Bearer ${env.GITHUB_TOKEN}`);
  return fetch(r);
}
