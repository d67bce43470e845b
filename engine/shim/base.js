// The shared base of the @cloudflare/containers and @cloudflare/sandbox
// shims. Only the static outbound configuration is real; the rest of the
// upstream surface exists so that scripts written for Cloudflare load.
const MARK = Symbol.for("outbound.container");
const STATE = Symbol("outbound.handlers");

function state(cls) {
  if (!Object.prototype.hasOwnProperty.call(cls, STATE)) {
    Object.defineProperty(cls, STATE, {
      value: { outbound: undefined, byHost: undefined, handlers: undefined },
      enumerable: false,
    });
  }
  return cls[STATE];
}

function mergeHandlers(cls, v) {
  const s = state(cls);
  if (v === undefined || v === null) {
    s.handlers = v;
    return;
  }
  s.handlers = Object.assign({}, s.handlers, v);
}

export class Container {
  constructor(ctx, env) {
    this.ctx = ctx;
    this.env = env;
    this.defaultPort = undefined;
    this.enableInternet = true;
    this.interceptHttps = false;
  }
  static get outbound() { return state(this).outbound; }
  static set outbound(v) { state(this).outbound = v; }
  static get outboundProxy() { return state(this).outbound; }
  static set outboundProxy(v) { state(this).outbound = v; }
  static get outboundByHost() { return state(this).byHost; }
  static set outboundByHost(v) { state(this).byHost = v; }
  static get outboundHandlers() { return state(this).handlers; }
  static set outboundHandlers(v) { mergeHandlers(this, v); }
  static get outboundProxies() { return state(this).handlers; }
  static set outboundProxies(v) { mergeHandlers(this, v); }
  // Instance methods upstream uses from inside the Durable Object. Here the
  // control API does this, so they are inert.
  async start() {}
  async stop() {}
  async destroy() {}
  async fetch() { return new Response("containers are not run by outbound", { status: 501 }); }
  async containerFetch() { return this.fetch(); }
  async startAndWaitForPorts() {}
  async setOutboundHandler() {}
  async setOutboundByHost() {}
  async setOutboundByHosts() {}
  async removeOutboundByHost() {}
  async setAllowedHosts() {}
  async setDeniedHosts() {}
  async allowHost() {}
  async denyHost() {}
  async removeAllowedHost() {}
  async removeDeniedHost() {}
}
Object.defineProperty(Container, MARK, { value: true });
Object.defineProperty(Container, Symbol.for("outbound.shim"), { value: true });

export class Sandbox extends Container {}
Object.defineProperty(Sandbox, Symbol.for("outbound.shim"), { value: true });

export class ContainerProxy {
  constructor(ctx, env) { this.ctx = ctx; this.env = env; }
  async fetch() { return new Response("ContainerProxy is inert in outbound", { status: 501 }); }
}
export function getContainer(binding, name) { return undefined; }
export function getRandom(binding) { return Promise.resolve(undefined); }
export function loadBalance(binding) { return Promise.resolve(undefined); }
export function switchPort(request, port) { return request; }
export function getSandbox(ns, id) { return undefined; }
export function proxyToSandbox() { return Promise.resolve(null); }
