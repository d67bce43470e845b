// Handlers that return a fetch's promise as is, which the engine waits for
// through the fetch itself rather than a then() reaction.
export default {
  outboundHandlers: {
    plain: (request) => fetch(request),
    failed: () => fetch("http://fail.test/"),
    aborted(request) {
      const c = new AbortController();
      const p = fetch("http://block.test/", { signal: c.signal });
      setTimeout(() => c.abort(new Error("stopped by the handler")), 5);
      return p;
    },
    observed(request) {
      const p = fetch(request);
      p.then((r) => { globalThis.observedStatus = r.status; });
      return p.then(() => new Response(`observed ${globalThis.observedStatus}`));
    },
    observedThenReturned(request) {
      globalThis.order = [];
      const p = fetch(request);
      p.then(() => globalThis.order.push("then"));
      return p;
    },
    order: () => new Response(String(globalThis.order)),
    // A Response made thenable settles the fetch's promise only later.
    thenable(request) {
      Response.prototype.then = function (resolve) {
        delete Response.prototype.then;
        setTimeout(() => resolve(new Response("via a later then")), 5);
      };
      return fetch(request);
    },
  },
};
