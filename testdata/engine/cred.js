// Credential injection: the secret is added on the way out and never seen by
// the sandbox.
export default {
  outbound(request, env, ctx) {
    const r = new Request(request);
    r.headers.set("x-auth-token", env.SECRET);
    return fetch(r);
  },
  outboundHandlers: {
    passthrough: (request) => fetch(request),
    trivial: () => new Response("ok"),
    async asyncTrivial() {
      await null;
      return new Response("ok");
    },
    async reads(request) {
      const body = await request.text();
      const up = await fetch(new Request(request.url, { method: "POST", body: body.toUpperCase(), headers: request.headers }));
      return new Response(`${up.status}:${await up.text()}`, { headers: { "x-upstream": up.headers.get("x-seen") ?? "none" } });
    },
    async rewrap(request) {
      const up = await fetch(request);
      return new Response(up.body, up);
    },
  },
};
