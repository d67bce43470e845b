// Soak policy (cmd/outbound-soak). Every request gets the env secret, the
// script version and the instance id as headers; the soak's upstream
// refuses a request without the secret and echoes the other two, so each
// response shows that the handler ran, in which generation, for whom.
// The soak rewrites the VERSION line on every reload.
const VERSION = "0";

function inject(request, env, ctx) {
  const r = new Request(request);
  r.headers.set("x-soak-token", env.SOAK_TOKEN);
  r.headers.set("x-soak-version", VERSION);
  r.headers.set("x-soak-instance", ctx.containerId);
  return r;
}

export default {
  interceptHttps: true,
  enableInternet: false,
  allowedHosts: ["*.soak.test"],
  outboundByHost: {
    "api.soak.test": (request, env, ctx) => fetch(inject(request, env, ctx)),
    // The WebSocket handshake passes through a handler too; the upstream
    // accepts it only with this handler's header.
    "ws.soak.test": (request, env, ctx) => {
      const r = inject(request, env, ctx);
      r.headers.set("x-soak-ws", "1");
      return fetch(r);
    },
  },
};
