container "demo-db" {
  hostname   = "db.demo.internal"
  ostemplate = "busybox"

  memory {
    ram = "256M"
  }
  disk {
    size = "256M"
  }
  network {
    interface "eth0" {
      ip = ["10.77.0.11/32", "fd77::11/128"]
    }
  }
}
