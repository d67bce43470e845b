// A virtual host: http://my.kv/<key> is answered by the proxy from a KV
// namespace, and never reaches the network. Each sandbox sees only its own
// keys, because the key is prefixed with ctx.containerId.
//
//   outbound serve --script examples/virtual-kv.js --kv STORE
//   curl -x "$HTTP_PROXY" -X PUT --data hello http://my.kv/greeting
//   curl -x "$HTTP_PROXY" http://my.kv/greeting
export default {
  enableInternet: false,
  outboundByHost: {
    "my.kv": async (request, env, ctx) => {
      const name = decodeURIComponent(new URL(request.url).pathname.slice(1));
      if (name === "") {
        return new Response("outbound: name a key, as http://my.kv/<key>\n", { status: 400 });
      }
      const key = `${ctx.containerId}/${name}`;
      switch (request.method) {
        case "GET": {
          const value = await env.STORE.get(key);
          return value === null ? new Response("not found\n", { status: 404 }) : new Response(value);
        }
        case "PUT":
          await env.STORE.put(key, await request.text());
          return new Response(null, { status: 204 });
        case "DELETE":
          await env.STORE.delete(key);
          return new Response(null, { status: 204 });
      }
      return new Response("method not allowed\n", { status: 405, headers: { Allow: "GET, PUT, DELETE" } });
    },
  },
};
