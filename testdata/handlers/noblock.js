// A closed policy without a blocked hook: blocks get the default 520.
export default {
  enableInternet: false,
  allowedHosts: ["allowed.test"],
  outboundByHost: { "allowed.test": () => new Response("ok") },
};
