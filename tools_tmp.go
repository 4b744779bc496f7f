//go:build tools

// Temporary: pins dependencies until the packages that use them land.
package tools
import (
 _ "github.com/labstack/echo/v4"
 _ "github.com/swaggo/swag"
 _ "github.com/swaggo/echo-swagger"
 _ "github.com/golang-migrate/migrate/v4"
 _ "github.com/golang-migrate/migrate/v4/database/postgres"
 _ "github.com/golang-migrate/migrate/v4/source/iofs"
 _ "github.com/lib/pq"
 _ "github.com/go-playground/validator/v10"
 _ "mellium.im/xmpp"
 _ "mellium.im/xmpp/jid"
)
