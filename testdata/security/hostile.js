// A hostile or broken policy script: each path misbehaves in one way. The
// proxy must answer that request with an error and keep serving others.
export default {
  interceptHttps: true,
  async outbound(request, env, ctx) {
    const u = new URL(request.url);
    switch (u.pathname) {
      case "/ok":
        return new Response("ok " + ctx.containerId);
      case "/throw":
        throw new Error("boom " + env.SECRET);
      case "/reject":
        return Promise.reject(new Error("rejected " + env.SECRET));
      case "/not-a-response":
        return env.SECRET;
      case "/fetch-refused":
        // The URL carries the secret, so the fetch error text does too.
        return fetch("http://refused.test/?key=" + env.SECRET);
      case "/loop":
        for (;;) {}
      case "/regex":
        // The backreference makes goja use its backtracking engine.
        return new Response(String(/^(a+)+\1$/.test("a".repeat(64) + "!")));
      case "/recurse": {
        const f = (n) => f(n + 1) + 1;
        return new Response(String(f(0)));
      }
      case "/big-array":
        return new Response(String(new Array(2 ** 32).length));
      case "/big-string":
        return new Response(String("x".repeat(2 ** 40).length));
      case "/grow": {
        // Allocates without bound, a megabyte at a time, until stopped.
        const keep = [];
        for (;;) keep.push(new Array(1 << 17).fill(1));
      }
      case "/hang":
        return new Promise(() => {});
      case "/timers":
        for (let i = 0; i < 2000; i++) setTimeout(() => {}, 60000);
        return new Response("timers");
      case "/timers-hang":
        for (let i = 0; i < 5000; i++) setInterval(() => {}, 1);
        return new Promise(() => {});
      case "/fetch-storm": {
        // Hundreds of fetches left running after the response.
        for (let i = 0; i < 200; i++) fetch("http://slow.test/").catch(() => {});
        return new Response("storm");
      }
      case "/fetch-storm-wait": {
        await Promise.all(Array.from({ length: 100 }, () => fetch("http://slow.test/")));
        return new Response("done");
      }
    }
    return new Response("unknown path", { status: 404 });
  },
};
