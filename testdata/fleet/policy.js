// The fleet tests' policy: every replica runs it. Nothing leaves unless a
// runtime handler is picked (hello answers itself), and http://kv.test/KEY
// is answered from the DATA namespace, so a KV write on one replica can be
// read by a handler on another.
export default {
  enableInternet: false,
  interceptHttps: true,
  outboundByHost: {
    "kv.test": async (request, env) => {
      const key = decodeURIComponent(new URL(request.url).pathname.slice(1));
      const value = await env.DATA.get(key);
      return value === null ? new Response("missing\n", { status: 404 }) : new Response(value);
    },
  },
  outboundHandlers: {
    hello(request, env, ctx) {
      // Uses the secret, so that a test can check it never reaches Redis.
      const keyed = env.API_KEY ? "keyed" : "unkeyed";
      return new Response(`hello ${JSON.stringify(ctx.params ?? null)} ${keyed} from ${ctx.containerId}`);
    },
  },
};
