# A demo container: busybox, routed address inside the demo's own network
# namespace (nothing can leave the machine). Edit a value and save: the
# agent applies it live (RAM, CPU limit, addresses, hostname).
container "demo-web" {
  hostname   = "web.demo.internal"
  ostemplate = "busybox"
  cpu    { limit = "50%"  units = 1000 }
  memory { ram = "128M" }
  disk   { size = "256M" }
  processes = 256
  network {
    nameservers = ["10.77.0.1"]
    interface "eth0" { ip = ["10.77.0.10/32"] }
  }
}
