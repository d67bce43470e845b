// Finds the policy classes of an evaluated module and reads their raw
// configuration. Go validates what comes back.
(function (mod) {
  "use strict";
  const MARK = Symbol.for("outbound.container");
  const SHIM = Symbol.for("outbound.shim");
  const has = (o, k) => Object.prototype.hasOwnProperty.call(o, k);
  const isClass = (v) => typeof v === "function" && v[MARK] === true && !has(v, SHIM);
  const out = [];
  const seen = new Set();
  const pick = (inst, cls, k) => {
    const v = inst === undefined ? undefined : inst[k];
    return v === undefined && cls !== undefined ? cls[k] : v;
  };
  for (const key of Object.keys(mod)) {
    const v = mod[key];
    if (key === "default" && v !== null && typeof v === "object") {
      out.push({
        name: "default",
        source: "",
        error: undefined,
        enableInternet: v.enableInternet,
        interceptHttps: v.interceptHttps,
        allowedHosts: v.allowedHosts,
        deniedHosts: v.deniedHosts,
        outbound: v.outbound !== undefined ? v.outbound : v.outboundProxy,
        outboundByHost: v.outboundByHost,
        outboundHandlers: v.outboundHandlers === undefined && v.outboundProxies === undefined ? undefined : Object.assign({}, v.outboundProxies, v.outboundHandlers),
        blocked: v.blocked,
        self: v,
      });
      continue;
    }
    if (!isClass(v) || seen.has(v)) continue;
    seen.add(v);
    let inst, error;
    try {
      inst = new v({}, {});
    } catch (e) {
      error = String(e && e.stack || e);
      inst = Object.create(v.prototype);
    }
    const ps = v.outboundProxies, hs = v.outboundHandlers;
    out.push({
      name: key === "default" ? v.name || "default" : key,
      source: Function.prototype.toString.call(v),
      error,
      enableInternet: pick(inst, v, "enableInternet"),
      interceptHttps: pick(inst, v, "interceptHttps"),
      allowedHosts: pick(inst, v, "allowedHosts"),
      deniedHosts: pick(inst, v, "deniedHosts"),
      outbound: v.outbound !== undefined ? v.outbound : v.outboundProxy,
      outboundByHost: v.outboundByHost,
      outboundHandlers: hs === undefined && ps === undefined ? undefined : (ps === hs ? hs : Object.assign({}, ps, hs)),
      blocked: v.blocked, // static, like the handlers
      self: v,
    });
  }
  return { classes: out, blocked: mod.blocked };
})
