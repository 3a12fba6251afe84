# Two containers in one file: a front end and its cache.
container "front01" {
  ostemplate = "debian-12-x86_64"
  templates  = ["nginx"]
  memory { ram = "256M" }
  network {
    interface "eth0" { ip = ["192.0.2.21/32"] }
  }
}

container "cache01" {
  ostemplate = "debian-12-x86_64"
  state      = "stopped"
  memory {
    ram  = "1G"
    swap = "256M"
  }
  network {
    interface "eth0" { ip = ["192.0.2.22/32"] }
  }
}
