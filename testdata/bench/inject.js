// Bench policy: inject a credential on every request, plain HTTP and
// intercepted HTTPS alike. The harness copies this file and rewrites the
// VERSION line for the hot-reload scenario; the upstream echoes the
// x-bench-version header back, so the client sees which generation answered.
const VERSION = "0";

export default {
  interceptHttps: true,
  outbound(request, env) {
    const r = new Request(request);
    r.headers.set("authorization", "Bearer " + env.BENCH_TOKEN);
    r.headers.set("x-bench-version", VERSION);
    return fetch(r);
  },
};
