# A demo container: busybox, a routed address inside the demo's own network
# namespace (nothing can leave the machine). Edit a value and save: the
# agent applies it live (RAM, CPU limit, addresses, hostname).
container "demo-web" {
  hostname   = "web.demo.internal"
  ostemplate = "busybox"
  processes  = 256

  cpu {
    limit = "50%"
    units = 1000
  }
  memory {
    ram = "128M"
  }
  disk {
    size = "256M"
  }
  network {
    nameservers = ["10.77.0.1"]
    interface "eth0" {
      ip = ["10.77.0.10/32"]
    }
  }
}
