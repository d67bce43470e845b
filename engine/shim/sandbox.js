export { Sandbox, Container, ContainerProxy, getSandbox, proxyToSandbox, getContainer, switchPort } from "outbound:base";
