// Every request goes through a handler that only adds a header.
export default {
  outbound(request) {
    const r = new Request(request);
    r.headers.set("x-through", "handler");
    return fetch(r);
  },
};
