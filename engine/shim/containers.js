export { Container, ContainerProxy, getContainer, getRandom, loadBalance, switchPort } from "outbound:base";
